// Model output → safe DOM. md.js turns Markdown into HTML in which model text is always
// text (raw HTML escaped, links only http(s)/mailto, images as links unless allowed);
// DOMPurify then cleans that HTML again, a second layer should md.js ever be wrong.
import DOMPurify from "dompurify";
import { escapeHtml, md, setHighlighter } from "./md.js";

export { escapeHtml, setHighlighter };

const PURIFY = {
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "iframe", "object", "embed"],
  FORBID_ATTR: ["style"],
  ALLOW_DATA_ATTR: false,
  ADD_ATTR: ["target"], // md.js sets it (with rel) on every link
  // DOMPurify's own, with no scheme but these three (it tests every attribute's value
  // with it: values with no scheme, "left" or "_blank", must pass)
  ALLOWED_URI_REGEXP: /^(?:(?:https?|mailto):|[^a-z]|[a-z+.-]+(?:[^a-z+.\-:]|$))/i,
};

let hooked = false;
function purifier() {
  if (!hooked) {
    // links open in a new tab and never get the opener (DOMPurify drops `target`)
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

const sanitize = (html) => purifier().sanitize(html, PURIFY);

export function renderMarkdown(src, { allowImages = false } = {}) {
  return sanitize(md.render(src ?? "", { allowImages: !!allowImages }));
}

// The top-level blocks of parsed Markdown: [index of its first token, its first line].
function topBlocks(tokens) {
  const blocks = [];
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (t.level === 0 && t.nesting !== -1 && t.map) blocks.push([i, t.map[0]]);
  }
  return blocks;
}

// Where line `n` of `src` starts (markdown-it counts \r\n, \r and \n as one line end),
// or -1 when `src` has fewer lines.
function lineStart(src, n) {
  const re = /\r\n|\r|\n/g;
  let at = 0;
  for (let i = 0; i < n; i++) {
    const m = re.exec(src);
    if (!m) return -1;
    at = m.index + m[0].length;
  }
  return at;
}

// The complete top-level blocks of `tokens` and how much of `src` they span, up to where
// the first incomplete block starts. Later text cannot change a block once another has
// started after it on a line of its own that has ended: a paragraph or a list ends at a
// blank line followed by a new block; a fence or a table is the last block until it is
// closed. The last block is never complete, nor the one before it while the last one's
// first line is unfinished: "```" may still become "```js`x", which opens no fence and
// so continues the paragraph before it.
function split(src, tokens) {
  const blocks = topBlocks(tokens);
  let k = blocks.length - 1;
  if (k >= 0 && lineStart(src, blocks[k][1] + 1) < 0) k--;
  if (k < 1) return { index: 0, length: 0 };
  const [index, line] = blocks[k];
  return { index, length: lineStart(src, line) };
}

// How much of `src` is complete top-level blocks (see split); 0 when none is.
export function completeBlocksLength(src) {
  src = src ?? "";
  return split(src, md.parse(src, {})).length;
}

const appendHtml = (el, html) => {
  const t = document.createElement("template");
  t.innerHTML = html;
  const nodes = [...t.content.childNodes];
  el.append(t.content);
  return nodes;
};

// A growing Markdown text rendered into `el`, re-rendering only its last block: the
// complete blocks are parsed, sanitized and laid out once, so a frame's work stays the
// size of the last block, not of the whole reply (a 20k-token reply re-rendered whole
// every 50 ms spends ~15 ms per frame on layout alone). Same output as renderMarkdown:
// link references defined in a block already shown carry over to the blocks after it;
// a reference used before its definition resolves in the final full render.
export class LiveMarkdown {
  constructor(el, { allowImages = false } = {}) {
    this.el = el;
    this.allowImages = !!allowImages;
    this.reset();
  }

  reset() {
    this.head = ""; // the text of the complete blocks already in the DOM
    this.refs = {}; // the link references those blocks defined
    this.tail = []; // the nodes of the last block, replaced on every render
    this.started = false;
  }

  render(text, { allowImages = this.allowImages } = {}) {
    text = text ?? "";
    if (!this.started || !text.startsWith(this.head) || !!allowImages !== this.allowImages) {
      this.el.replaceChildren();
      this.reset();
      this.allowImages = !!allowImages;
      this.started = true;
    }
    for (const node of this.tail) node.remove();
    const rest = text.slice(this.head.length);
    const env = () => ({ allowImages: this.allowImages, references: { ...this.refs } });
    const tokens = md.parse(rest, env());
    const done = split(rest, tokens);
    if (done.length > 0) {
      // parsed again on their own, once: what they show and define does not depend on
      // the text after them
      const headEnv = env();
      const head = rest.slice(0, done.length);
      appendHtml(this.el, sanitize(md.renderer.render(md.parse(head, headEnv), md.options, headEnv)));
      this.refs = headEnv.references ?? this.refs;
      this.head += head;
    }
    const tailEnv = env();
    const tail = md.renderer.render(tokens.slice(done.index), md.options, tailEnv);
    this.tail = appendHtml(this.el, sanitize(tail));
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
