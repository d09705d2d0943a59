import { afterEach, describe, expect, it, vi } from "vitest";
import chat, { KEY_EVENTS } from "../src/chat.js";
import { FakeModel } from "./fake_model.js";

const mounted = [];

function mount(state = {}) {
  const model = new FakeModel({
    messages: [], _messages_rev: 0, status: "idle", totals: {}, title: "test-model", ...state,
  });
  const parent = document.createElement("div"); // the notebook, as far as the panel knows
  const el = document.createElement("div");
  parent.append(el);
  document.body.append(parent);
  const cleanup = chat.render({ model, el });
  const seen = [];
  for (const type of KEY_EVENTS) parent.addEventListener(type, (e) => seen.push(`${type} ${e.key}`));
  const box = el.querySelector("textarea");
  const buttons = [...el.querySelectorAll("button")];
  const view = { model, parent, el, cleanup, seen, box, buttons };
  mounted.push(view);
  return view;
}

afterEach(() => {
  for (const v of mounted.splice(0)) {
    v.cleanup();
    v.parent.remove();
  }
});

function press(target, key, init = {}) {
  const events = KEY_EVENTS.map((type) => new KeyboardEvent(type, {
    key, bubbles: true, cancelable: true, ...init,
  }));
  for (const e of events) target.dispatchEvent(e);
  return events[0]; // the keydown
}

// What would delete, cut, add or change cells if the notebook saw it in command mode
// (JupyterLab), or delete the cell at once (VS Code's Delete).
const DESTRUCTIVE = ["Escape", "d", "d", "x", "a", "b", "m", "y", "z", "Delete", "Backspace"];

describe("the panel keeps its keys", () => {
  it("the notebook sees no key typed into the text box", () => {
    const { box, seen } = mount();
    box.focus();
    for (const key of DESTRUCTIVE) press(box, key);
    press(box, "Enter", { shiftKey: true });
    press(box, "Enter", { ctrlKey: true });
    expect(seen).toEqual([]);
  });

  it("nor any key pressed on its buttons", () => {
    const { buttons, seen } = mount();
    expect(buttons.map((b) => b.textContent)).toEqual(["Send", "Stop"]);
    for (const b of buttons) for (const key of [...DESTRUCTIVE, "Enter", " "]) press(b, key);
    expect(seen).toEqual([]);
  });

  it("Enter still sends and empties the box; Shift+Enter is left to the text box", () => {
    const { box, model } = mount();
    box.value = "first line";
    const shift = press(box, "Enter", { shiftKey: true });
    expect(shift.defaultPrevented).toBe(false); // the browser adds the new line
    expect(model.sent).toEqual([]);
    const enter = press(box, "Enter");
    expect(enter.defaultPrevented).toBe(true);
    expect(model.sent).toEqual([{ type: "submit", text: "first line" }]);
    expect(box.value).toBe("");
  });

  it("lets keys go again once the view is gone", () => {
    const view = mount();
    view.cleanup();
    view.cleanup = () => {};
    press(view.box, "d");
    expect(view.seen).toEqual(["keydown d", "keypress d", "keyup d"]);
  });
});

describe("initialize", () => {
  it("keeps the model's messages current, and a view shows them", async () => {
    const model = new FakeModel({
      messages: [], _messages_rev: 0, status: "idle", totals: {}, title: "m",
    });
    const stop = chat.initialize({ model });
    expect(model.sent).toEqual([{ type: "sync", rev: 0 }]);
    model.receive({
      type: "messages", base: 0, rev: 1, count: 2,
      upsert: [
        { id: "t1-user", role: "user", text: "Hello <b>there</b>", turn: "t1" },
        { id: "t1", role: "assistant", status: "complete", text: "Hi!", reasoning: "",
          readout: { status: "complete" }, error: "" },
      ],
    });
    const el = document.createElement("div");
    document.body.append(el);
    const cleanup = chat.render({ model, el });
    await vi.waitFor(() => expect(el.querySelectorAll(".nbs-msg").length).toBe(2));
    expect(el.querySelector(".nbs-user .nbs-body").textContent).toBe("Hello <b>there</b>");
    expect(el.querySelector(".nbs-assistant .nbs-body").textContent.trim()).toBe("Hi!");
    cleanup();
    stop();
    el.remove();
  });
});
