import { afterEach, describe, expect, it } from "vitest";
import reply from "../src/reply.js";
import chat from "../src/chat.js";
import { blockSummary, Segments, toolBlock, ToolState } from "../src/tool_blocks.js";
import { FakeModel } from "./fake_model.js";

const HOSTILE = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>';

const block = (over = {}) => ({
  key: "0:0", id: "call_0", name: "lookup", arguments: '{"city": "Paris"}', status: "running",
  result: null, is_error: false, elapsed_s: null, at: 0, step: 0, ...over,
});

const mounted = [];
afterEach(() => {
  for (const [cleanup, el] of mounted.splice(0)) {
    cleanup();
    el.remove();
  }
  delete window.pwned;
});

function mountReply() {
  const model = new FakeModel({});
  const el = document.createElement("div");
  document.body.append(el);
  mounted.push([reply.render({ model, el }), el]);
  return { model, el };
}

const flush = () => new Promise((r) => setTimeout(r, 80)); // a paint (50 ms at most)

describe("a tool block", () => {
  it("says name, arguments, status and time on one line", () => {
    expect(blockSummary(block({ status: "complete", elapsed_s: 0.012 })))
      .toBe('lookup({"city": "Paris"}) · done · 12 ms');
    expect(blockSummary(block({ status: "approval" }))).toBe('lookup({"city": "Paris"}) · waiting for approval');
    expect(blockSummary(block({ status: "background", elapsed_s: 3.5 })))
      .toBe('lookup({"city": "Paris"}) · stopped (still running in the background) · 3.50 s');
  });

  it("is collapsed, shows the result inside, and stays inert whatever it holds", () => {
    const ui = toolBlock(block({ arguments: `{"q": ${JSON.stringify(HOSTILE)}}`, status: "complete",
      result: HOSTILE, elapsed_s: 0.5 }));
    document.body.append(ui.root);
    const details = ui.root.querySelector("details");
    expect(details.open).toBe(false);
    expect(ui.root.querySelector("img, script")).toBeNull();
    expect(ui.root.querySelectorAll("pre code")[1].textContent).toBe(HOSTILE);
    expect(ui.root.querySelector("pre code").textContent).toContain('"q": "<img src=x');
    expect(window.pwned).toBeUndefined();
    ui.root.remove();
  });

  it("asks Approve / Deny while it waits, and answers once", () => {
    const answers = [];
    const ui = toolBlock(block({ status: "approval" }), (id, ok) => answers.push([id, ok]));
    const [approve, deny] = ui.root.querySelectorAll(".nbs-tool-ask button");
    expect(ui.root.querySelector(".nbs-tool-ask").hidden).toBe(false);
    expect(approve.getAttribute("aria-label")).toBe("Approve lookup");
    deny.click();
    approve.click(); // disabled after the first answer
    expect(answers).toEqual([["call_0", false]]);
    ui.update(block({ status: "denied", result: "Not run", is_error: true }));
    expect(ui.root.querySelector(".nbs-tool-ask").hidden).toBe(true);
    expect(ui.root.querySelector(".nbs-tool-label:nth-of-type(2)").textContent).toBe("error");
  });
});

describe("segments", () => {
  it("cut the text where the calls were made, blocks in order", () => {
    const el = document.createElement("div");
    const seg = new Segments(el, (div) => ({ render: (t) => { div.textContent = t; } }));
    const text = "Let me check.Rome is warmer.";
    const at = "Let me check.".length;
    seg.update(text, [block({ at }), block({ key: "0:1", id: "call_1", at })]);
    const kinds = [...el.children].map((n) => (n.className === "nbs-segment" ? n.textContent
      : n.dataset.key));
    expect(kinds).toEqual(["Let me check.", "0:0", "0:1", "Rome is warmer."]);
    // a block updates in place; an empty text piece is hidden
    seg.update(text, [block({ at: 0, status: "complete" })]);
    expect(el.children[0].hidden).toBe(true);
    expect(el.children[1].dataset.status).toBe("complete");
  });
});

describe("the %%chat live view", () => {
  it("draws the blocks the kernel sends, between the texts, and sends the answers", async () => {
    const { model, el } = mountReply();
    model.emit("msg:custom", { type: "snapshot", seq: 0, text: "", reasoning: "" });
    model.emit("msg:custom", { type: "delta", seq: 1, text: "Checking." });
    model.emit("msg:custom", { type: "tool", block: block({ at: 9, status: "approval",
      arguments: JSON.stringify({ q: HOSTILE }) }) });
    await flush();
    const tool = el.querySelector(".nbs-tool");
    expect(tool.dataset.status).toBe("approval");
    tool.querySelector(".nbs-approve").click();
    expect(model.sent.at(-1)).toEqual({ type: "approve", id: "call_0", ok: true });
    model.emit("msg:custom", { type: "tool", block: block({ at: 9, status: "complete",
      result: HOSTILE, elapsed_s: 0.02 }) });
    model.emit("msg:custom", { type: "delta", seq: 2, text: "21 C." });
    await flush();
    const parts = [...el.querySelector(".nbs-body").children];
    expect(parts.map((n) => n.className)).toEqual(["nbs-segment", "nbs-tool", "nbs-segment"]);
    expect(parts[0].textContent).toContain("Checking.");
    expect(parts[2].textContent).toContain("21 C.");
    expect(el.querySelector(".nbs-tool summary").textContent).toBe(
      `lookup({"city": "Paris"}) · done · 20 ms`);
    expect(el.querySelector("img, script")).toBeNull();
    expect(window.pwned).toBeUndefined();
  });

  it("a snapshot brings a late view its blocks", async () => {
    const { model, el } = mountReply();
    model.emit("msg:custom", { type: "snapshot", seq: 3, text: "Hi", reasoning: "",
      tools: [block({ at: 2, status: "running" })] });
    await flush();
    expect(el.querySelector(".nbs-tool").dataset.status).toBe("running");
  });
});

describe("the chat panel", () => {
  it("shows a finished reply's blocks from its message", async () => {
    const model = new FakeModel({ messages: [], _messages_rev: 0, status: "idle", totals: {},
      title: "m" });
    const el = document.createElement("div");
    document.body.append(el);
    mounted.push([chat.render({ model, el }), el]);
    model.set("messages", [{ id: "t1", role: "assistant", text: "A.B.", reasoning: "",
      status: "complete", readout: {}, error: "",
      tools: [block({ at: 2, status: "complete", result: HOSTILE })] }]);
    await flush();
    const body = el.querySelector(".nbs-assistant .nbs-body");
    expect([...body.children].map((n) => n.className)).toEqual(
      ["nbs-segment", "nbs-tool", "nbs-segment"]);
    expect(body.querySelector(".nbs-tool pre:last-of-type code").textContent).toBe(HOSTILE);
    expect(body.querySelector("img, script")).toBeNull();
  });
});

describe("tool state", () => {
  it("keeps the newest of each block", () => {
    const s = new ToolState();
    expect(s.put({ nope: 1 })).toBe(false);
    s.put(block());
    s.put(block({ status: "complete" }));
    s.put(block({ key: "0:1" }));
    expect(s.list.map((b) => [b.key, b.status])).toEqual([["0:0", "complete"], ["0:1", "running"]]);
  });
});
