// Model output → safe HTML. Raw HTML in a reply is shown as text (escaped), never run;
// what Markdown itself produces goes through DOMPurify, so `javascript:` links and the
// like are dropped too.
import { Marked } from "marked";
import DOMPurify from "dompurify";
// Code highlighting is optional: the chat panel installs highlight.js (src/highlight.js);
// the %%chat reply view does not, which keeps its bundle (sent with every cell) small.
let highlighter = null; // (code, lang) => html string, or null when lang is unknown
export function setHighlighter(fn) {
  highlighter = fn;
}

const escapeHtml = (s) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

const marked = new Marked({
  gfm: true,
  breaks: false,
  async: false,
  renderer: {
    html(token) {
      return escapeHtml(token.text ?? token.raw ?? "");
    },
    code(token) {
      const lang = (token.lang || "").trim().split(/\s+/)[0].toLowerCase();
      const highlighted = lang && highlighter ? highlighter(token.text, lang) : null;
      const body = highlighted ?? escapeHtml(token.text);
      const cls = highlighted != null ? ` class="hljs language-${escapeHtml(lang)}"` : ' class="hljs"';
      return `<pre><code${cls}>${body}</code></pre>\n`;
    },
  },
});

const PURIFY = {
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "iframe", "object", "embed"],
  FORBID_ATTR: ["style"],
  ALLOW_DATA_ATTR: false,
};

let hooked = false;
function purifier() {
  if (!hooked) {
    // links open in a new tab and never get the opener
    DOMPurify.addHook("afterSanitizeAttributes", (node) => {
      if (node.tagName === "A" && node.getAttribute("href")) {
        node.setAttribute("target", "_blank");
        node.setAttribute("rel", "noopener noreferrer");
      }
    });
    hooked = true;
  }
  return DOMPurify;
}

export function renderMarkdown(src) {
  const html = marked.parse(src ?? "");
  return purifier().sanitize(html, PURIFY);
}

// How much of `src` is complete top-level blocks: every block but the last one. Later
// text cannot change a block once another block has started after it (a paragraph or a
// list ends at a blank line followed by a new block; a fence or a table is the last block
// until it is closed), so a live view renders that part once and keeps its DOM.
// 0 when nothing is complete (or the lexer's pieces do not add up to the source).
export function completeBlocksLength(src) {
  src = src ?? "";
  const tokens = marked.lexer(src);
  let last = tokens.length - 1;
  while (last >= 0 && tokens[last].type === "space") last--;
  let head = "";
  for (let i = 0; i < last; i++) head += tokens[i].raw;
  return src.startsWith(head) ? head.length : 0;
}

const appendHtml = (el, html) => {
  const t = document.createElement("template");
  t.innerHTML = html;
  const nodes = [...t.content.childNodes];
  el.append(t.content);
  return nodes;
};

// A growing Markdown text rendered into `el`, re-rendering only its tail: the complete
// blocks are parsed, sanitized and laid out once, so a frame's work stays the size of
// the last block, not of the whole reply (a 20k-token reply re-rendered whole every
// 50 ms spends ~15 ms per frame on layout alone). Same sanitizing as renderMarkdown.
// Reference-style links defined in an earlier block resolve in the final full render.
export class LiveMarkdown {
  constructor(el) {
    this.el = el;
    this.reset();
  }

  reset() {
    this.head = ""; // the text of the complete blocks already in the DOM
    this.tail = []; // the nodes of the last block, replaced on every render
    this.started = false;
  }

  render(text) {
    text = text ?? "";
    if (!this.started || !text.startsWith(this.head)) {
      this.el.replaceChildren();
      this.reset();
      this.started = true;
    }
    for (const node of this.tail) node.remove();
    const rest = text.slice(this.head.length);
    const done = completeBlocksLength(rest);
    if (done > 0) {
      appendHtml(this.el, renderMarkdown(rest.slice(0, done)));
      this.head += rest.slice(0, done);
    }
    this.tail = appendHtml(this.el, renderMarkdown(rest.slice(done)));
  }
}

// Adds a Copy button to every code block (our own element, added after sanitizing).
export function addCopyButtons(container) {
  for (const pre of container.querySelectorAll("pre")) {
    if (pre.querySelector(".nbs-copy")) continue;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "nbs-copy";
    button.textContent = "Copy";
    button.setAttribute("aria-label", "Copy code");
    pre.append(button);
  }
}

// One listener per container: copies the code block whose Copy button was clicked.
export function handleCopyClicks(container) {
  const onClick = (event) => {
    const button = event.target.closest?.(".nbs-copy");
    if (!button || !container.contains(button)) return;
    const code = button.parentElement.querySelector("code");
    const text = code ? code.textContent : "";
    navigator.clipboard?.writeText(text).then(
      () => { button.textContent = "Copied"; },
      () => { button.textContent = "Copy failed"; },
    );
  };
  container.addEventListener("click", onClick);
  return () => container.removeEventListener("click", onClick);
}

export { escapeHtml };
