// Properties of the renderer over Markdown from a grammar of the constructs that have
// broken Markdown sanitizers: fences of every kind, math, raw HTML, entities, links and
// images (TESTING.md, section 7). The kernel's side is tests/test_render.py.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { LiveMarkdown, renderMarkdown } from "../src/markdown.js";
import { toHtml } from "../src/md.js";
import { problems } from "./safety.js";

const URLS = ["https://e.org/x?a=1&b=<2>", "http://e.org", "javascript:alert(1)",
  "JaVaScRiPt:alert(1)", "data:text/html,<script>alert(1)</script>", "vbscript:x",
  "mailto:a@b.c", "/api/contents", "./x.ipynb", "#top", "", "java\tscript:x", "//e.org",
  "<https://e.org/a b>", "https://e.org/\"onmouseover=\"x"];
const HTML = ['<img src=x onerror="alert(1)">', "<script>alert(1)</script>",
  "<svg onload=alert(1)>", "<iframe src=javascript:alert(1)>", "<a href=javascript:x>",
  "<style>*{}</style>", "<div onmouseover=alert(1)>", "</code>", "<!-- x -->",
  "<details open ontoggle=alert(1)>", "<math><mi xlink:href=javascript:x>"];
const INLINE = ["`", "``", "```", "~~", "*", "_", "**", "$", "$$", "\\(", "\\)", "\\[",
  "\\]", "\\$", "\\", "&lt;", "&#60;", "&#x3C;", "&amp;lt;script&amp;gt;", "&notit;",
  "&copy;", "|", "[", "]", "(", ")", "<", ">", "!", "a", "b c", "😀", "é", " ", "://",
  "std::vector<int>"];

const url = fc.constantFrom(...URLS);
const inline = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...INLINE) },
  { weight: 2, arbitrary: fc.constantFrom(...HTML) },
  fc.tuple(fc.constantFrom("", "!"), fc.constantFrom("x", "*y*", "`z`", "![i](https://i.org/i.png)"), url)
    .map(([bang, label, u]) => `${bang}[${label}](${u})`),
  url.map((u) => `<${u}>`),
  fc.string({ maxLength: 6 }),
);
const text = fc.array(inline, { maxLength: 8 }).map((a) => a.join(""));
const fence = fc.tuple(fc.constantFrom("```", "````", "~~~", "``"), fc.constantFrom("", " ", "   ", "    "),
  fc.constantFrom("", "html", "js`x", "<b>"), fc.array(text, { maxLength: 3 }), fc.boolean())
  .map(([f, indent, info, lines, closed]) =>
    `${indent}${f}${info}\n${lines.map((l) => `${indent}${l}\n`).join("")}${closed ? `${indent}${f}\n` : ""}`);
const line = fc.oneof(
  { weight: 3, arbitrary: text },
  fence,
  fc.tuple(fc.constantFrom("- ", "1. ", "> ", "    ", "# ", "| ", "   ", "\t", "$$ "), text).map((p) => p.join("")),
  fc.constantFrom("---", "===", "| a | b |\n|---|:-:|", "[r]: javascript:x", "[r]: https://r.org", "[r]", ""),
);
const markdown = fc.array(line, { maxLength: 10 }).chain((lines) =>
  fc.constantFrom("\n", "\n\n", "\r\n").map((nl) => lines.join(nl)));

// The same attributes in any order (DOMPurify sets them again, in its own order).
const canonical = (html) => {
  const t = document.createElement("template");
  t.innerHTML = html;
  for (const el of t.content.querySelectorAll("*")) {
    const attrs = [...el.attributes].map((a) => [a.name, a.value]).sort();
    for (const [name] of attrs) el.removeAttribute(name);
    for (const [name, value] of attrs) el.setAttribute(name, value);
  }
  return t.innerHTML;
};

// Hundreds of renders each: more than vitest's 5 s on a busy two-core machine.
describe("for any Markdown from the grammar", { timeout: 120_000 }, () => {
  it("the HTML has only allowed elements and attributes, before and after DOMPurify", () => {
    fc.assert(fc.property(markdown, fc.boolean(), (md, allowImages) => {
      expect(problems(toHtml(md, { allowImages }), { allowImages })).toEqual([]);
      expect(problems(renderMarkdown(md, { allowImages }), { allowImages })).toEqual([]);
    }), { numRuns: 400 });
  });

  it("DOMPurify finds nothing to remove (md.js alone is safe)", () => {
    fc.assert(fc.property(markdown, fc.boolean(), (md, allowImages) => {
      const purified = renderMarkdown(md, { allowImages });
      expect(canonical(purified)).toBe(canonical(toHtml(md, { allowImages })));
    }), { numRuns: 300 });
  });

  // A link reference used before its definition resolves only in the full render at the
  // end (the chat panel's; the saved output's): the live view has shown that block.
  const noDefinitions = markdown.filter((md) => !/^ {0,3}\[/m.test(md));

  it("a live view streamed in pieces ends as one full render", () => {
    fc.assert(fc.property(noDefinitions, fc.array(fc.nat(), { maxLength: 6 }), (md, cuts) => {
      const el = document.createElement("div");
      const live = new LiveMarkdown(el);
      for (const c of [...cuts].sort((a, b) => a - b)) live.render(md.slice(0, c % (md.length + 1)));
      live.render(md);
      expect(el.innerHTML).toBe(renderMarkdown(md));
    }), { numRuns: 300 });
  });
});
