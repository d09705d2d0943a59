import { describe, expect, it } from "vitest";
import { renderMarkdown } from "../src/markdown.js";

const host = (html) => {
  const div = document.createElement("div");
  div.innerHTML = html;
  return div;
};

describe("renderMarkdown", () => {
  it("renders Markdown", () => {
    const div = host(renderMarkdown("# Title\n\n**bold** and `code`\n\n```py\nx = 1\n```"));
    expect(div.querySelector("h1").textContent).toBe("Title");
    expect(div.querySelector("strong").textContent).toBe("bold");
    expect(div.querySelector("pre code").textContent).toContain("x = 1");
  });

  it("shows an <img onerror> payload as text, never as an element", () => {
    const payload = '<img src=x onerror="window.__pwned=1">';
    const div = host(renderMarkdown(`Look: ${payload}`));
    expect(div.querySelector("img")).toBeNull();
    expect(div.textContent).toContain(payload);
    expect(window.__pwned).toBeUndefined();
  });

  it("shows <script> as text", () => {
    const div = host(renderMarkdown("<script>window.__pwned=2</script>\n\nafter"));
    expect(div.querySelector("script")).toBeNull();
    expect(div.textContent).toContain("<script>window.__pwned=2</script>");
  });

  it("drops javascript: links but keeps normal ones, opening safely", () => {
    const div = host(renderMarkdown("[a](javascript:alert(1)) and [b](https://example.org)"));
    const links = [...div.querySelectorAll("a")];
    for (const a of links) expect(a.getAttribute("href") ?? "").not.toMatch(/^javascript:/i);
    const ok = links.find((a) => a.textContent === "b");
    expect(ok.getAttribute("href")).toBe("https://example.org");
    expect(ok.getAttribute("rel")).toContain("noopener");
  });

  it("keeps HTML inside code blocks literal", () => {
    const div = host(renderMarkdown("```html\n<b>bold?</b>\n```"));
    expect(div.querySelector("b")).toBeNull();
    expect(div.querySelector("code").textContent).toContain("<b>bold?</b>");
  });
});

describe("code highlighting (the chat panel installs it)", () => {
  it("highlights known languages and escapes unknown ones", async () => {
    const { setHighlighter } = await import("../src/markdown.js");
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
