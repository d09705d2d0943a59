// Model text → HTML, the one Markdown dialect nbstream shows. No DOM here: node runs it
// too (tests/test_render.py compares it with the kernel's renderer, markdown-it-py, on a
// corpus). Keep it in step with nbstream/_notebook/render.py, which ports markdown-it
// 14.1.0 (its port.yaml): the same options and the same rules, so the final output a
// notebook saves shows exactly what the live view showed.
//
// - CommonMark, plus GFM tables and strikethrough; no linkify, no typographer.
// - Raw HTML in the text is shown as text (html: false).
// - Links only to http:, https: and mailto:, opening in a new tab without the opener or
//   the referrer; anything else (javascript:, data:, relative …) stays text.
// - Images are links ("image: ALT", not loaded) unless allowImages is set in `env`; a
//   remote image loads without a click, the usual way a prompt-injected reply sends
//   data out. Even when allowed, only http(s) images load.
// - Table alignment is an `align` attribute, not a style.
import MarkdownIt from "markdown-it";

export const LINK_OK = /^(?:https?|mailto):/i;
const IMAGE_OK = /^https?:/i;
const LANGUAGE = /^[A-Za-z0-9_+#.-]*(?:[ \t][\s\S]*)?$/;

export const escapeHtml = (s) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

let highlighter = null; // (code, lang) => html string, or null when lang is unknown

// The chat panel installs highlight.js here; the %%chat reply view does not, which keeps
// its bundle (sent with every cell) small, and its HTML equal to the kernel's.
export function setHighlighter(fn) {
  highlighter = fn;
}

function toText(token) {
  token.type = "text";
  token.tag = "";
  token.nesting = 0;
  token.attrs = null;
  token.content = "";
}

// After inline parsing: fences keep a plain language name only; links to a scheme that is not allowed become their text (a link
// with an empty destination, `[a]()`, gets this far), allowed links get rel and target,
// an image inside a link is marked (it is shown as text, not as a link in a link).
function safety(state) {
  for (const block of state.tokens) {
    // a language name of letters, digits and _+#.- only (it becomes a class; DOMPurify
    // would drop a stranger one, and the live view would differ from the saved output)
    if (block.type === "fence" && !LANGUAGE.test(block.info)) block.info = "";
    if ((block.type === "th_open" || block.type === "td_open") && block.attrs) {
      const style = block.attrGet("style") || "";
      block.attrs = null;
      const m = /^text-align:(left|right|center)$/.exec(style);
      if (m) block.attrSet("align", m[1]);
    }
    if (block.type !== "inline" || !block.children) continue;
    const open = []; // is each enclosing link kept?
    for (const token of block.children) {
      if (token.type === "link_open") {
        const ok = LINK_OK.test(token.attrGet("href") || "");
        open.push(ok);
        if (ok) {
          token.attrSet("rel", "noopener noreferrer");
          token.attrSet("target", "_blank");
        } else {
          toText(token);
        }
      } else if (token.type === "link_close") {
        if (!open.pop()) toText(token);
      } else if (token.type === "image" && open.includes(true)) {
        token.meta = { inLink: true };
      }
    }
  }
}

// An image's alt text: the text of its description, markup stripped (markdown-it's own
// renderInlineAsText leaves out code spans; markdown-it-py's keeps them).
function plain(tokens) {
  let out = "";
  for (const t of tokens || []) {
    if (t.type === "text" || t.type === "text_special" || t.type === "code_inline") {
      out += t.content;
    }
    else if (t.type === "image") out += plain(t.children);
    else if (t.type === "softbreak" || t.type === "hardbreak") out += "\n";
  }
  return out;
}

function image(tokens, idx, options, env, slf) {
  const token = tokens[idx];
  const src = token.attrGet("src") || "";
  const alt = plain(token.children);
  if (env && env.allowImages && IMAGE_OK.test(src)) {
    token.attrSet("alt", alt);
    return slf.renderToken(tokens, idx, options);
  }
  const label = escapeHtml(`image: ${alt || src}`);
  if ((token.meta && token.meta.inLink) || !LINK_OK.test(src)) {
    return `<span class="nbs-image">${label}</span>`;
  }
  return `<a href="${escapeHtml(src)}" rel="noopener noreferrer" target="_blank" class="nbs-image">${label}</a>`;
}

// Where markdown-it-py 4.3 differs from markdown-it 14.1.0, this follows the Python port
// (both differences are bugs of the JavaScript, fixed there):
//
// 1. Code spans. markdown-it caches how far it scanned for closing backtick runs, and a
//    look-ahead from a link label ("[`a`b`") leaves that cache wrong, so a code span is
//    missed. This is markdown-it-py's rule: the cache is built from the whole source.
function backticks(state, silent) {
  const src = state.src;
  const start = state.pos;
  if (src.charCodeAt(start) !== 0x60) return false;
  const max = state.posMax;
  let pos = start + 1;
  while (pos < max && src.charCodeAt(pos) === 0x60) pos++;
  const marker = src.slice(start, pos);
  const openerLength = marker.length;
  if (!state.backticksScanned) {
    const last = {}; // run length -> where its last run starts
    let p = 0;
    let s;
    while ((s = src.indexOf("`", p)) !== -1) {
      p = s + 1;
      while (p < src.length && src.charCodeAt(p) === 0x60) p++;
      last[p - s] = s;
    }
    state.backticks = last;
    state.backticksScanned = true;
  }
  if ((state.backticks[openerLength] ?? -1) >= pos) {
    let matchEnd = pos;
    let matchStart;
    while ((matchStart = src.indexOf("`", matchEnd)) !== -1 && matchStart < max) {
      matchEnd = matchStart + 1;
      while (matchEnd < src.length && src.charCodeAt(matchEnd) === 0x60) matchEnd++;
      if (matchEnd > max) break; // a run crossing posMax closes nothing here
      if (matchEnd - matchStart === openerLength) {
        if (!silent) {
          const token = state.push("code_inline", "code", 0);
          token.markup = marker;
          let content = src.slice(pos, matchStart).replace(/\n/g, " ");
          // strip one space from each side, unless the content is all spaces
          if (content.startsWith(" ") && content.endsWith(" ") && /[^ ]/.test(content)) {
            content = content.slice(1, -1);
          }
          token.content = content;
        }
        state.pos = matchEnd;
        return true;
      }
    }
  }
  if (!silent) state.pending += marker;
  state.pos = pos;
  return true;
}

// 2. Emphasis and strikethrough delimiters next to a character outside the BMP (an
//    emoji): markdown-it looks at half of its surrogate pair, which is neither space nor
//    punctuation; markdown-it-py at the character, a symbol, so punctuation. Same rules,
//    by code point.
const { isMdAsciiPunct, isPunctChar, isWhiteSpace } = MarkdownIt().utils;
function scanDelims(start, canSplitWord) {
  const src = this.src;
  const max = this.posMax;
  const marker = src.charCodeAt(start);
  let lastChar = 0x20; // the start of the line counts as whitespace
  if (start > 0) {
    const low = src.charCodeAt(start - 1);
    const high = start > 1 ? src.charCodeAt(start - 2) : 0;
    const pair = low >= 0xdc00 && low <= 0xdfff && high >= 0xd800 && high <= 0xdbff;
    lastChar = pair ? src.codePointAt(start - 2) : low;
  }
  let pos = start;
  while (pos < max && src.charCodeAt(pos) === marker) pos++;
  const count = pos - start;
  const nextChar = pos < max ? src.codePointAt(pos) : 0x20; // so does its end
  const isLastPunctChar = isMdAsciiPunct(lastChar) || isPunctChar(String.fromCodePoint(lastChar));
  const isNextPunctChar = isMdAsciiPunct(nextChar) || isPunctChar(String.fromCodePoint(nextChar));
  const isLastWhiteSpace = isWhiteSpace(lastChar);
  const isNextWhiteSpace = isWhiteSpace(nextChar);
  const leftFlanking =
    !isNextWhiteSpace && (!isNextPunctChar || isLastWhiteSpace || isLastPunctChar);
  const rightFlanking =
    !isLastWhiteSpace && (!isLastPunctChar || isNextWhiteSpace || isNextPunctChar);
  const can_open = leftFlanking && (canSplitWord || !rightFlanking || isLastPunctChar);
  const can_close = rightFlanking && (canSplitWord || !leftFlanking || isNextPunctChar);
  return { can_open, can_close, length: count };
}

export const md = new MarkdownIt("commonmark", {
  html: false,
  linkify: false,
  typographer: false,
  breaks: false,
  highlight: (code, lang) => (highlighter && lang ? highlighter(code, lang) ?? "" : ""),
}).enable(["table", "strikethrough"]);
md.validateLink = (url) => LINK_OK.test(url);
md.inline.ruler.at("backticks", backticks);
md.inline.State = class extends md.inline.State {}; // this instance's own
md.inline.State.prototype.scanDelims = scanDelims;
md.core.ruler.push("nbstream_safety", safety);
md.renderer.rules.image = image;

// Markdown → HTML (a string, not yet sanitized). `env` carries allowImages (and, for a
// live view, the link references of the blocks it has already shown).
export function toHtml(src, { allowImages = false } = {}) {
  return md.render(src ?? "", { allowImages: !!allowImages });
}
