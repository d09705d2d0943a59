import { describe, expect, it } from "vitest";
import { renderMarkdown, setHighlighter } from "../src/markdown.js";
import { toHtml } from "../src/md.js";
import { CORPUS, problems } from "./safety.js";

const host = (html) => {
  const div = document.createElement("div");
  div.innerHTML = html;
  return div;
};

describe("renderMarkdown", () => {
  it("renders CommonMark with tables and strikethrough", () => {
    const div = host(renderMarkdown(
      "# Title\n\n**bold**, `code` and ~~gone~~\n\n```py\nx = 1\n```\n\n| a | b |\n|:-|-:|\n| 1 | 2 |"));
    expect(div.querySelector("h1").textContent).toBe("Title");
    expect(div.querySelector("strong").textContent).toBe("bold");
    expect(div.querySelector("s").textContent).toBe("gone");
    expect(div.querySelector("pre code.language-py").textContent).toContain("x = 1");
    expect(div.querySelector("th").getAttribute("align")).toBe("left");
    expect(div.querySelector("td + td").getAttribute("align")).toBe("right");
    expect(div.querySelector("[style]")).toBeNull(); // alignment is not a style
  });

  it("shows an <img onerror> payload as text, never as an element", () => {
    const payload = '<img src=x onerror="window.__pwned=1">';
    const div = host(renderMarkdown(`Look: ${payload}`));
    expect(div.querySelector("img")).toBeNull();
    expect(div.textContent).toContain(payload);
    expect(window.__pwned).toBeUndefined();
  });

  it("shows <script> and a whole HTML page as text", () => {
    const div = host(renderMarkdown("<script>window.__pwned=2</script>\n\nafter"));
    expect(div.querySelector("script")).toBeNull();
    expect(div.textContent).toContain("<script>window.__pwned=2</script>");
    const page = host(renderMarkdown("<!DOCTYPE html>\n<html><body onload=x()>hi</body></html>"));
    expect(page.querySelector("body, html, [onload]")).toBeNull();
    expect(page.textContent).toContain("<html><body onload=x()>");
  });

  it("links only to http, https and mailto, in a new tab without the opener", () => {
    const div = host(renderMarkdown(
      "[a](javascript:alert(1)) [b](https://example.org) [c](data:text/html,x) " +
      "[d](mailto:a@b.c) [e](./rel) <vbscript:x> [f]()"));
    const links = [...div.querySelectorAll("a")];
    expect(links.map((a) => a.textContent)).toEqual(["b", "d"]);
    for (const a of links) {
      expect(a.getAttribute("rel")).toBe("noopener noreferrer");
      expect(a.getAttribute("target")).toBe("_blank");
    }
    expect(div.textContent).toContain("[a](javascript:alert(1))"); // text, as written
  });

  it("shows images as links unless they are allowed", () => {
    const src = "![a cat](https://example.org/cat.png) ![x](data:image/png;base64,AA==)";
    const off = host(renderMarkdown(src));
    expect(off.querySelector("img")).toBeNull();
    const link = off.querySelector("a.nbs-image");
    expect(link.textContent).toBe("image: a cat");
    expect(link.getAttribute("href")).toBe("https://example.org/cat.png");
    const on = host(renderMarkdown(src, { allowImages: true }));
    expect([...on.querySelectorAll("img")].map((i) => i.getAttribute("src"))).toEqual([
      "https://example.org/cat.png", // a data: image never loads
    ]);
    expect(on.querySelector("img").getAttribute("alt")).toBe("a cat");
  });

  it("does not link an image inside a link twice", () => {
    const div = host(renderMarkdown("[![badge](https://img.example/b.svg)](https://example.org)"));
    expect(div.querySelectorAll("a")).toHaveLength(1);
    expect(div.querySelector("a span.nbs-image").textContent).toBe("image: badge");
  });

  it("leaves $…$ as text (nothing typesets math, live or saved)", () => {
    const div = host(renderMarkdown("$x<y$ and $$\\int$$"));
    expect(div.textContent.trim()).toBe("$x<y$ and $$\\int$$");
  });

  it("keeps code exactly as written, next to :// and |", () => {
    const div = host(renderMarkdown("Use `std::vector<int>` (https://en.cppreference.com) | here"));
    expect(div.querySelector("code").textContent).toBe("std::vector<int>");
  });

  it("decodes only whole entity names, as CommonMark does", () => {
    expect(toHtml("&copy; &notit; &ampxx; &lt;b&gt;")).toBe(
      "<p>© &amp;notit; &amp;ampxx; &lt;b&gt;</p>\n");
  });
});

describe("the corpus (tests/markdown_corpus.json)", () => {
  for (const { name, markdown } of CORPUS.cases) {
    it(`renders nothing live: ${name}`, () => {
      for (const allowImages of [false, true]) {
        expect(problems(toHtml(markdown, { allowImages }), { allowImages })).toEqual([]);
        expect(problems(renderMarkdown(markdown, { allowImages }), { allowImages })).toEqual([]);
      }
    });
  }
});

describe("code highlighting (the chat panel installs it)", () => {
  it("highlights known languages and escapes unknown ones", async () => {
    const { highlightCode } = await import("../src/highlight.js");
    setHighlighter(highlightCode);
    try {
      const py = host(renderMarkdown("```python\ndef f(): return '<b>'\n```"));
      expect(py.querySelector(".hljs-keyword").textContent).toBe("def");
      expect(py.querySelector("b")).toBeNull(); // still text inside highlighted code
      const other = host(renderMarkdown("```klingon\n<b>x</b>\n```"));
      expect(other.querySelector("b")).toBeNull();
      expect(other.querySelector("code").textContent).toContain("<b>x</b>");
    } finally {
      setHighlighter(null);
    }
  });
});
