import { describe, expect, it } from "vitest";
import { completeBlocksLength, LiveMarkdown, renderMarkdown } from "../src/markdown.js";

const DOC = [
  "# Title\n\n",
  "A paragraph with **bold** and `code`,\nwrapped over two lines.\n\n",
  "Setext heading\n===\n\n",
  "- one\n- two\n\n- three, now a loose list\n  continued\n\n",
  "1. first\n2. second\n\n",
  "```python\ndef f():\n\n    return 1  # a blank line inside the fence\n```\n\n",
  "> quoted\nlazy continuation\n\n",
  "| a | b |\n| --- | --- |\n| 1 | 2 |\n| 3 | 4 |\n\n",
  'Raw <img src=x onerror="window.__live=1"> stays text.\n\n',
  "    indented code\n\n",
  "---\n\n",
  "The end.",
].join("");

const full = (text) => {
  const div = document.createElement("div");
  div.innerHTML = renderMarkdown(text);
  return div.innerHTML;
};

describe("completeBlocksLength", () => {
  it("counts every block but the last", () => {
    expect(completeBlocksLength("one")).toBe(0);
    expect(completeBlocksLength("one\n\ntwo\n")).toBe("one\n\n".length);
    expect(completeBlocksLength("# T\n\npara\n\nmore\n")).toBe("# T\n\npara\n\n".length);
    expect(completeBlocksLength("one\r\n\r\ntwo\r")).toBe("one\r\n\r\n".length);
  });

  it("and not the one before the last while the last one's first line is unfinished", () => {
    // "```" may still become "```js`x", which opens no fence: the paragraph goes on
    expect(completeBlocksLength("# T\n\npara\n```")).toBe("# T\n\n".length);
    expect(completeBlocksLength("para\n```\n")).toBe("para\n".length);
    expect(completeBlocksLength("one\n\ntwo")).toBe(0);
  });

  it("keeps an open fence, a growing list and a table in the tail", () => {
    expect(completeBlocksLength("intro\n\n```\ncode\n\nmore code")).toBe("intro\n\n".length);
    expect(completeBlocksLength("- a\n\n- b")).toBe(0);
    expect(completeBlocksLength("| a |\n| - |\n| 1 |")).toBe(0);
  });
});

describe("LiveMarkdown", () => {
  it("renders every prefix of a reply exactly as a full render does", () => {
    const el = document.createElement("div");
    const md = new LiveMarkdown(el);
    for (let n = 1; n <= DOC.length; n += 3) {
      const text = DOC.slice(0, n);
      md.render(text);
      expect(el.innerHTML, `prefix of ${n} characters`).toBe(full(text));
    }
    md.render(DOC);
    expect(el.innerHTML).toBe(full(DOC));
    expect(el.querySelector("img")).toBeNull();
    expect(window.__live).toBeUndefined();
  });

  it("keeps the DOM of complete blocks and replaces only the tail", () => {
    const el = document.createElement("div");
    const md = new LiveMarkdown(el);
    md.render("first paragraph\n\nsecond\n");
    const first = el.querySelector("p");
    md.render("first paragraph\n\nsecond, longer\n\nthird");
    expect(el.querySelector("p")).toBe(first);
    expect(el.querySelectorAll("p")).toHaveLength(3);
  });

  it("starts again when the text is not an extension (a resync)", () => {
    const el = document.createElement("div");
    const md = new LiveMarkdown(el);
    md.render("old text\n\nmore");
    md.render("new text\n\nelse");
    expect(el.innerHTML).toBe(full("new text\n\nelse"));
    md.reset();
    md.render("x");
    expect(el.innerHTML).toBe(full("x"));
  });
});
