// Model output → safe HTML. Raw HTML in a reply is shown as text (escaped), never run;
// what Markdown itself produces goes through DOMPurify, so `javascript:` links and the
// like are dropped too.
import { Marked } from "marked";
import DOMPurify from "dompurify";

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

export { escapeHtml };
