import { afterEach, describe, expect, it } from "vitest";
import chat from "../src/chat.js";
import reply from "../src/reply.js";
import { JsonView, partialJSON } from "../src/structured.js";
import { FakeModel } from "./fake_model.js";
// Written by tests/test_structured.py from the kernel's own parser and renderer.
import CASES from "./partial_cases.json";

const mounted = [];
afterEach(() => {
  for (const cleanup of mounted.splice(0)) cleanup();
  document.body.replaceChildren();
});

function host() {
  const el = document.createElement("div");
  document.body.append(el);
  return el;
}

// The kernel's markup, as the browser reads it (so quoting is the DOM's on both sides).
function kernelHTML(html) {
  const div = document.createElement("div");
  div.innerHTML = html;
  return div.innerHTML;
}

describe("partialJSON reads a prefix as the kernel's turn.partial does", () => {
  it(`gives the kernel's value for each of ${CASES.prefixes.length} prefixes`, () => {
    const wrong = [];
    for (const { text, value } of CASES.prefixes) {
      const got = partialJSON(text);
      if (JSON.stringify(got) !== JSON.stringify(value)) wrong.push({ text, value, got });
    }
    expect(wrong).toEqual([]);
  });

  it("never shows a number before it is complete", () => {
    expect(partialJSON('{"t": 6')).toEqual({});
    expect(partialJSON('{"t": 61,')).toEqual({ t: 61 });
    expect(partialJSON("[12")).toEqual([]);
    expect(partialJSON("[12345, 6")).toEqual([12345]);
  });
});

describe("JsonView draws the value as the kernel's saved output does", () => {
  for (const [i, { value, html }] of CASES.html.entries()) {
    it(`value ${i}: the same markup`, () => {
      const el = host();
      new JsonView(el).update(value);
      expect(el.innerHTML).toBe(kernelHTML(html));
    });
  }

  it("grown a prefix at a time, it ends as drawn at once, keeping what it drew", () => {
    const text = JSON.stringify({
      title: "Forecast",
      days: [
        { city: "Paris", temperature: 21.5, tags: ["warm", "dry"] },
        { city: "Rome", temperature: 24, tags: [] },
        { city: "Oslo", wind: { speed: 3, unit: "m/s" } },
      ],
    });
    const live = host();
    const view = new JsonView(live);
    let firstRow = null;
    for (let i = 0; i <= text.length; i += 1) {
      view.update(partialJSON(text.slice(0, i)));
      const row = live.querySelector("table.nbs-rows tbody tr");
      if (row && !firstRow) firstRow = row;
    }
    const once = host();
    new JsonView(once).update(JSON.parse(text));
    expect(live.innerHTML).toBe(once.innerHTML);
    // the first row was drawn once and patched, not drawn again at every step
    expect(live.querySelector("table.nbs-rows tbody tr")).toBe(firstRow);
    // a column that appeared late (wind) is there for the rows before it, empty
    expect([...live.querySelectorAll("table.nbs-rows thead th")].map((th) => th.textContent))
      .toEqual(["city", "temperature", "tags", "wind"]);
  });

  it("shows markup in keys and values as text", () => {
    const el = host();
    new JsonView(el).update({
      "<img src=x onerror=alert(1)>": "<script>alert(2)</script>",
      list: ["<b>bold</b>", { "<i>": "<svg onload=alert(3)>" }],
    });
    expect(el.querySelectorAll("img, script, b, i, svg").length).toBe(0);
    expect(el.textContent).toContain("<img src=x onerror=alert(1)>");
    expect(el.textContent).toContain("<svg onload=alert(3)>");
  });
});

describe("the %%chat live view of a structured reply", () => {
  it("draws the value so far from the text deltas, and the JSON on request", async () => {
    const model = new FakeModel({ allow_images: false, structured: true });
    const el = host();
    mounted.push(reply.render({ model, el }));
    model.receive({ type: "snapshot", seq: 0, text: "", reasoning: "" });
    const pieces = ['{"city": "San', ' Francisco", "temp', 'erature": 6', '1, "units": "f"}'];
    const seen = [];
    for (const [i, text] of pieces.entries()) {
      model.receive({ type: "delta", seq: i + 1, text });
      await new Promise((r) => setTimeout(r, 80)); // a paint (at most every 50 ms)
      seen.push([...el.querySelectorAll(".nbs-obj th")].map((th) => th.textContent).join(","));
    }
    expect(seen).toEqual(["city", "city", "city", "city,temperature,units"]);
    expect(el.querySelector(".nbs-obj td .nbs-num").textContent).toBe("61");
    expect(el.querySelector(".nbs-body > p")).toBeNull(); // not drawn as Markdown
    const raw = el.querySelector("details.nbs-raw");
    raw.open = true;
    raw.dispatchEvent(new Event("toggle"));
    expect(raw.querySelector("code").textContent).toBe(pieces.join(""));
  });
});

describe("the chat panel with a structured reply", () => {
  it("draws the final value and says why it is not valid", () => {
    const text = '{"city": "Paris", "temperature": "hot"}';
    const error = "The JSON does not match Location: $.temperature: Input should be a valid number";
    const model = new FakeModel({
      messages: [
        { id: "u1", role: "user", text: "Weather?", turn: "t1" },
        { id: "t1", role: "assistant", text, reasoning: "", status: "complete", readout: {},
          error: "", structured: true, parse_error: error },
      ],
      _messages_rev: 1, status: "idle", totals: {}, title: "m",
    });
    const el = host();
    mounted.push(chat.render({ model, el }));
    const msg = el.querySelector('[data-id="t1"]');
    expect([...msg.querySelectorAll(".nbs-obj th")].map((th) => th.textContent))
      .toEqual(["city", "temperature"]);
    expect(msg.querySelector(".nbs-parse-error").textContent).toBe(`Not valid: ${error}`);
    expect(msg.querySelector(".nbs-parse-error").hidden).toBe(false);
  });
});
