import { describe, expect, it } from "vitest";
import { applyMessages, syncMessages } from "../src/model_events.js";
import { FakeModel } from "./fake_model.js";

const user = (n, text = `question ${n}`) => ({ id: `t${n}-user`, role: "user", text });
const reply = (n, status, text = "") => ({ id: `t${n}`, role: "assistant", status, text });

// What the kernel sends for turn n: at the start (user + streaming reply), at the end.
const start = (n, base) => ({
  type: "messages", base, rev: base + 1, count: 2 * n, upsert: [user(n), reply(n, "streaming")],
});
const end = (n, base, text = `answer ${n}`) => ({
  type: "messages", base, rev: base + 1, count: 2 * n, upsert: [reply(n, "complete", text)],
});

describe("applyMessages", () => {
  it("appends new messages and replaces a message by its id", () => {
    const a = applyMessages([], 0, start(1, 0));
    expect(a.status).toBe("applied");
    expect(a.messages.map((m) => m.id)).toEqual(["t1-user", "t1"]);
    const b = applyMessages(a.messages, 1, end(1, 1));
    expect(b.messages.map((m) => [m.id, m.status ?? "", m.text])).toEqual([
      ["t1-user", "", "question 1"],
      ["t1", "complete", "answer 1"],
    ]);
    expect(a.messages[1].status).toBe("streaming"); // the old list is left as it was
  });

  it("ignores a change it already has", () => {
    expect(applyMessages([user(1), reply(1, "complete")], 2, end(1, 1)).status).toBe("duplicate");
  });

  it("reports a gap when the change is for another revision", () => {
    expect(applyMessages([], 0, end(1, 1)).status).toBe("gap");
  });

  it("reports a gap when the result is not the length the kernel has", () => {
    const lying = { ...start(2, 2), count: 5 };
    expect(applyMessages([user(1), reply(1, "complete")], 2, lying).status).toBe("gap");
  });

  it("reports a gap for a malformed change rather than throwing", () => {
    expect(applyMessages([], 0, { type: "messages" }).status).toBe("gap");
    expect(applyMessages([], 0, { type: "messages", base: 0, rev: 1, count: 0, upsert: null })
      .status).toBe("gap");
  });
});

describe("syncMessages", () => {
  it("asks once at start for anything sent before it listened", () => {
    const model = new FakeModel({ messages: [], _messages_rev: 3 });
    syncMessages(model);
    expect(model.sent).toEqual([{ type: "sync", rev: 3 }]);
  });

  it("applies changes in order, so views see the list grow, and sends nothing back", () => {
    const model = new FakeModel({ messages: [], _messages_rev: 0 });
    syncMessages(model);
    model.sent.length = 0;
    const seen = [];
    model.on("change:messages", (v) => seen.push(v.map((m) => m.text)));
    model.receive(start(1, 0));
    model.receive(end(1, 1));
    model.receive(start(2, 2));
    model.receive({ type: "delta", seq: 1, text: "x" }); // a view's business, not ours
    expect(seen).toEqual([
      ["question 1", ""],
      ["question 1", "answer 1"],
      ["question 1", "answer 1", "question 2", ""],
    ]);
    expect(model.get("_messages_rev")).toBe(3);
    expect(model.sent).toEqual([]);
  });

  it("asks for what it missed after a gap, and carries on from the kernel's answer", () => {
    const model = new FakeModel({ messages: [], _messages_rev: 0 });
    syncMessages(model);
    model.receive(start(1, 0));
    model.sent.length = 0;
    // the end of turn 1 (rev 2) is lost; the start of turn 2 shows the gap
    model.receive(start(2, 2));
    expect(model.sent).toEqual([{ type: "sync", rev: 1 }]);
    expect(model.get("messages").length).toBe(2); // nothing applied out of order
    // the kernel answers with everything changed since rev 1
    model.receive({
      type: "messages", base: 1, rev: 3, count: 4,
      upsert: [reply(1, "complete", "answer 1"), user(2), reply(2, "streaming")],
    });
    model.receive(end(2, 3));
    model.receive(end(2, 3)); // a duplicate changes nothing
    expect(model.get("messages").map((m) => m.text)).toEqual([
      "question 1", "answer 1", "question 2", "answer 2",
    ]);
    expect(model.get("_messages_rev")).toBe(4);
    expect(model.sent).toEqual([{ type: "sync", rev: 1 }]);
  });

  it("takes the whole list when the kernel sends it as state", () => {
    const model = new FakeModel({ messages: [user(1)], _messages_rev: 1 });
    syncMessages(model);
    model.set("messages", [user(5)]); // what a state update from the kernel does
    model.set("_messages_rev", 7);
    model.receive({ ...start(6, 7), count: 3 });
    expect(model.get("messages").map((m) => m.id)).toEqual(["t5-user", "t6-user", "t6"]);
  });

  it("stops listening when cleaned up", () => {
    const model = new FakeModel({ messages: [], _messages_rev: 0 });
    const cleanup = syncMessages(model);
    expect(model.listeners("msg:custom")).toBe(1);
    cleanup();
    expect(model.listeners("msg:custom")).toBe(0);
  });
});
