// Shared by the vitest files: the corpus of tests/markdown_corpus.json, and the check
// that a piece of HTML has only the elements and attributes nbstream may produce.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url)); // (jsdom replaces URL: paths, then)
export const CORPUS = JSON.parse(readFileSync(join(HERE, "../../tests/markdown_corpus.json"), "utf8"));
const ELEMENTS = new Set(CORPUS.allowed.elements);
const ATTRIBUTES = CORPUS.allowed.attributes;
const LINK_OK = /^(?:https?|mailto):/i;

// The problems found in `html` (an empty list when there are none).
export function problems(html, { allowImages = false } = {}) {
  const t = document.createElement("template");
  t.innerHTML = html;
  const found = [];
  for (const el of t.content.querySelectorAll("*")) {
    const tag = el.tagName.toLowerCase();
    const isImg = tag === "img" && allowImages;
    if (!ELEMENTS.has(tag) && !isImg) found.push(`element <${tag}>`);
    for (const { name, value } of el.attributes) {
      if (!(ATTRIBUTES[tag] ?? []).includes(name)) found.push(`attribute ${name} on <${tag}>`);
      if (name === "href" && !LINK_OK.test(value)) found.push(`href ${value}`);
      if (name === "src" && !/^https?:/i.test(value)) found.push(`src ${value}`);
    }
  }
  return found;
}
