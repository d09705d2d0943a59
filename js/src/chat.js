// The chat panel (ChatWidget): message list, input box, Send, Stop, readouts, totals.
import { highlightCode } from "./highlight.js";
import {
  addCopyButtons,
  handleCopyClicks,
  LiveMarkdown,
  renderMarkdown,
  setHighlighter,
} from "./markdown.js";
import { subscribe, syncMessages } from "./model_events.js";
import { readoutText, totalsText } from "./readout.js";
import { renderTakeover } from "./takeover.js";
import { StructuredLive } from "./structured.js";
import { makeScheduler, TextStream } from "./text_stream.js";
import { thumbnails } from "./thumbnails.js";
import { Segments, ToolState } from "./tool_blocks.js";
import "./chat.css";

setHighlighter(highlightCode);

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== false && v != null) node.setAttribute(k, v === true ? "" : v);
  }
  node.append(...children);
  return node;
}

// Keys typed in the panel are the panel's: a notebook that saw them would act on them
// as its own shortcuts (VS Code deletes the cell on Delete; JupyterLab's command mode
// has d,d, x, a, b …). Stopped where they leave the panel, after the panel's own
// handlers (Enter sends), so typing, Tab and the buttons work as usual.
export const KEY_EVENTS = ["keydown", "keypress", "keyup"];

export function keepKeys(node) {
  const stop = (e) => e.stopPropagation();
  for (const type of KEY_EVENTS) node.addEventListener(type, stop);
  return () => {
    for (const type of KEY_EVENTS) node.removeEventListener(type, stop);
  };
}

// The model, once per front end (before any view): keep `messages` current from the
// kernel's change messages, whether or not a view is showing.
function initialize({ model }) {
  return syncMessages(model);
}

function render({ model, el }) {
  // -- layout -------------------------------------------------------------------------
  const title = h("span", { class: "nbs-title" });
  const totals = h("span", { class: "nbs-totals" });
  const list = h("div", { class: "nbs-messages", role: "log", "aria-live": "polite",
    "aria-label": "Conversation" });
  const input = h("textarea", { class: "nbs-input", rows: "2", "aria-label": "Message",
    placeholder: "Message (Enter sends, Shift+Enter adds a line)" });
  const send = h("button", { class: "nbs-send", type: "button", "aria-label": "Send" }, "Send");
  const stop = h("button", { class: "nbs-stop", type: "button", "aria-label": "Stop" }, "Stop");
  const root = h("div", { class: "nbs-chat" },
    h("div", { class: "nbs-header" }, title, totals),
    list,
    h("div", { class: "nbs-compose" }, input, send, stop));
  el.append(root);
  const unCopy = handleCopyClicks(list);
  const unKeys = keepKeys(root);

  // -- state of this view ---------------------------------------------------------------
  const live = new TextStream();
  const liveTools = new ToolState(); // the live reply's tool-call blocks
  let liveId = "";
  let liveReadout = null;
  const answer = (id, ok) => model.send({ type: "approve", id, ok });
  const nodes = new Map(); // message id -> {root, body, thinking, thinkingBody, readout, error, key}

  const atBottom = () => list.scrollHeight - list.scrollTop - list.clientHeight < 40;

  function messageNode(msg) {
    let n = nodes.get(msg.id);
    if (n) return n;
    const body = h("div", { class: "nbs-body" });
    const thinkingBody = h("div", { class: "nbs-thinking-body" });
    const thinking = h("details", { class: "nbs-thinking", hidden: true },
      h("summary", {}, "Reasoning"), thinkingBody);
    const readout = h("div", { class: "nbs-readout" });
    const error = h("div", { class: "nbs-error", role: "alert", hidden: true });
    const superseded = h("div", { class: "nbs-superseded-list", hidden: true });
    const notes = h("div", { class: "nbs-takeovers", hidden: true });
    const node = h("div", { class: `nbs-msg nbs-${msg.role}`, "data-id": msg.id }, superseded,
      thinking, body, notes, error, readout);
    n = { root: node, body, thinking, thinkingBody, readout, error, superseded, notes, key: "",
      md: new LiveMarkdown(body) };
    nodes.set(msg.id, n);
    return n;
  }

  // A reply with tool calls: its text cut at each call's block (tool_blocks.js); each
  // piece rendered live while it streams, in full once at the end.
  function fillWithTools(n, text, blocks, streaming, allowImages) {
    n.streaming = streaming;
    if (n.segments && n.allowImages !== allowImages) {
      for (const seg of n.segments.texts) seg.shown = null; // render every piece again
    }
    n.allowImages = allowImages;
    if (!n.segments) {
      n.md.reset();
      n.body.replaceChildren();
      n.segments = new Segments(n.body, (div) => {
        const md = new LiveMarkdown(div);
        return {
          render(piece) {
            const opts = { allowImages: n.allowImages };
            if (n.streaming) {
              md.render(piece, opts);
            } else {
              md.reset();
              div.innerHTML = renderMarkdown(piece, opts);
            }
          },
        };
      }, answer);
    }
    n.segments.update(text, blocks);
  }

  function fill(n, msg, text, reasoning, readout, streaming = false, blocks = msg.tools,
    takeover = msg) {
    const allowImages = !!model.get("allow_images");
    if (msg.role !== "user") {
      renderTakeover(n.superseded, n.notes, takeover.notes || [], takeover.superseded || []);
    }
    if (msg.role === "user") {
      n.body.textContent = text; // the user's own words, as typed
      const thumbs = thumbnails(msg.images); // and the images sent with them
      if (thumbs) n.body.append(thumbs);
    } else {
      if (blocks && blocks.length) {
        fillWithTools(n, text, blocks, streaming, allowImages);
      } else if (!text && msg.status === "cancelled") {
        n.md.reset();
        n.structured = null;
        n.body.replaceChildren(h("p", { class: "nbs-note" }, "Stopped before the first token."));
      } else if (msg.structured) { // response_format=: the value as a table or tree
        if (!n.structured) {
          n.md.reset();
          n.body.replaceChildren();
          n.structured = new StructuredLive(n.body);
        }
        n.structured.paint(text, { final: !streaming, error: msg.parse_error || "" });
      } else if (streaming) {
        n.md.render(text, { allowImages }); // only the last block is re-rendered while it streams
      } else {
        n.md.reset();
        n.body.innerHTML = renderMarkdown(text, { allowImages }); // the whole text, once, at the end
      }
      addCopyButtons(n.body);
      n.thinking.hidden = !reasoning;
      n.thinkingBody.textContent = reasoning || "";
      n.readout.textContent = readoutText(readout);
      n.error.hidden = !msg.error;
      n.error.replaceChildren();
      if (msg.error) {
        n.error.append(h("span", {}, msg.error), " ");
        const retry = h("button", { class: "nbs-retry", type: "button", "aria-label": "Retry" },
          "Retry");
        retry.addEventListener("click", () => model.send({ type: "retry" }));
        n.error.append(retry);
      }
    }
    n.root.dataset.status = msg.status || "";
  }

  function paint() {
    const follow = atBottom();
    const msgs = model.get("messages") || [];
    const keep = new Set();
    let prev = null;
    for (const msg of msgs) {
      keep.add(msg.id);
      const n = messageNode(msg);
      const streaming = msg.role === "assistant" && msg.status === "streaming";
      if (streaming && msg.id === liveId && live.seq >= 0) {
        fill(n, msg, live.text, live.reasoning, { ...msg.readout, ...liveReadout, status: "streaming" },
          true, liveTools.list, live);
        n.key = "";
      } else {
        const tools = (msg.tools || []).map((b) => `${b.key}:${b.status}`).join(",");
        const key = `${msg.status}|${msg.text.length}|${msg.error}|${msg.text.slice(-32)}|` +
          `${!!model.get("allow_images")}|${tools}|${(msg.notes || []).length}`;
        if (n.key !== key) {
          fill(n, msg, msg.text, msg.reasoning, msg.readout);
          n.key = key;
        }
      }
      if (n.root.previousSibling !== prev || n.root.parentNode !== list) {
        list.insertBefore(n.root, prev ? prev.nextSibling : list.firstChild);
      }
      prev = n.root;
    }
    for (const [id, n] of nodes) {
      if (!keep.has(id)) {
        n.root.remove();
        nodes.delete(id);
      }
    }
    const streaming = model.get("status") === "streaming";
    stop.disabled = !streaming;
    send.disabled = streaming;
    title.textContent = model.get("title") || "";
    totals.textContent = totalsText(model.get("totals"));
    root.dataset.status = model.get("status");
    if (follow) list.scrollTop = list.scrollHeight;
  }
  const scheduler = makeScheduler(paint);

  // -- messages from the kernel -----------------------------------------------------------
  const onMsg = (msg) => {
    if (msg.type === "delta") {
      if (msg.id !== liveId) {
        liveId = msg.id;
        liveReadout = null;
        liveTools.reset([]);
        live.seq = -1;
        live.text = "";
        live.reasoning = "";
        if (msg.seq === 1) live.snapshot({ seq: 0, text: "", reasoning: "" });
      }
      const r = live.delta(msg);
      if (r === "gap" || r === "waiting") model.send({ type: "resync" });
      if (msg.readout) liveReadout = msg.readout;
      scheduler.request();
    } else if (msg.type === "snapshot") {
      if (msg.id !== liveId) {
        liveId = msg.id;
        live.seq = -1;
      }
      if (msg.readout) liveReadout = msg.readout;
      liveTools.reset(msg.tools);
      if (live.snapshot(msg) || msg.tools) scheduler.request(true);
    } else if (msg.type === "tool") {
      if (msg.id !== liveId) {
        liveId = msg.id;
        liveReadout = null;
        liveTools.reset([]);
        live.seq = -1; // its text has not been seen yet: ask for it
        model.send({ type: "resync" });
      }
      if (liveTools.put(msg.block)) scheduler.request(true);
    }
  };
  const onTraits = () => scheduler.request(true);

  // -- the user -----------------------------------------------------------------------
  const submit = () => {
    const text = input.value;
    if (!text.trim() || model.get("status") === "streaming") return;
    model.send({ type: "submit", text });
    input.value = "";
  };
  const onKey = (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    }
  };
  const onStop = () => model.send({ type: "stop" });
  input.addEventListener("keydown", onKey);
  send.addEventListener("click", submit);
  stop.addEventListener("click", onStop);
  const unsubscribe = subscribe(model, {
    "msg:custom": onMsg,
    "change:messages": onTraits,
    "change:status": onTraits,
    "change:totals": onTraits,
    "change:title": onTraits,
    "change:allow_images": onTraits,
  });

  paint();
  if (model.get("status") === "streaming") model.send({ type: "resync" });

  return () => {
    unCopy();
    unKeys();
    input.removeEventListener("keydown", onKey);
    send.removeEventListener("click", submit);
    stop.removeEventListener("click", onStop);
    unsubscribe();
  };
}

export default { initialize, render };
