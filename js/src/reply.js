// The live view of one streaming reply (the %%chat cell output).
import { addCopyButtons, handleCopyClicks, LiveMarkdown } from "./markdown.js";
import { subscribe } from "./model_events.js";
import { readoutText } from "./readout.js";
import { StructuredLive } from "./structured.js";
import { makeScheduler, TextStream } from "./text_stream.js";
import { renderTakeover } from "./takeover.js";
import { Segments, ToolState } from "./tool_blocks.js";
import "./reply.css";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
}

// It exists only while the reply streams: when the turn ends, the kernel replaces the
// cell's output with static HTML (text, error, readout), rendered from the same Markdown
// by the same rules (md.js; markdown-it-py in the kernel), and closes this widget. Its
// one trait says whether images may load; the text arrives as deltas or a snapshot.
function render({ model, el: host }) {
  const stream = new TextStream();
  const thinkingBody = el("div", { class: "nbs-thinking-body" });
  const thinking = el("details", { class: "nbs-thinking", hidden: "" },
    el("summary", {}, "Reasoning"), thinkingBody);
  const body = el("div", { class: "nbs-body", role: "log", "aria-live": "polite" });
  const stop = el("button", { class: "nbs-stop", type: "button", "aria-label": "Stop" }, "Stop");
  const readout = el("span", { class: "nbs-readout" });
  const superseded = el("div", { class: "nbs-superseded-list", hidden: "" });
  const notes = el("div", { class: "nbs-takeovers", hidden: "" });
  const root = el("div", { class: "nbs-reply", "data-status": "streaming" }, superseded,
    thinking, body, notes, el("div", { class: "nbs-bar" }, stop, readout));
  host.append(root);
  const unCopy = handleCopyClicks(body);

  let live = {};
  const md = new LiveMarkdown(body); // redraws only the last block while streaming
  const tools = new ToolState(); // tool-call blocks (a reply with tools=)
  let segments = null; // once there is a block: the text cut at each call
  // response_format=: the value so far as a table or tree, parsed from the same text
  // (with tool calls in the reply, the text is shown as text between them instead)
  const structured = model.get("structured") ? new StructuredLive(body) : null;
  const answer = (id, ok) => model.send({ type: "approve", id, ok });
  const renderText = () => {
    const opts = { allowImages: !!model.get("allow_images") };
    if (!tools.byKey.size) {
      if (structured) structured.paint(stream.text);
      else md.render(stream.text, opts);
      return;
    }
    if (!segments) {
      body.replaceChildren();
      segments = new Segments(body, (div) => {
        const piece = new LiveMarkdown(div);
        return { render: (t) => piece.render(t, { allowImages: !!model.get("allow_images") }) };
      }, answer);
    }
    segments.update(stream.text, tools.list);
  };
  const paint = () => {
    renderTakeover(superseded, notes, stream.notes, stream.superseded);
    renderText();
    addCopyButtons(body);
    if (stream.reasoning) {
      thinking.hidden = false;
      thinkingBody.textContent = stream.reasoning;
    }
    readout.textContent = readoutText({ ...live, status: "streaming" });
  };
  const scheduler = makeScheduler(paint);

  const onMsg = (msg) => {
    if (msg.type === "delta") {
      const r = stream.delta(msg);
      if (r === "gap") model.send({ type: "resync" });
      if (msg.readout) live = msg.readout;
      if (r === "applied" || msg.readout) scheduler.request();
    } else if (msg.type === "snapshot") {
      if (msg.readout) live = msg.readout;
      if (msg.tools) tools.reset(msg.tools);
      const replaced = stream.snapshot(msg);
      if (replaced) structured?.reset(); // the text was replaced: draw the value afresh
      if (replaced || msg.tools) scheduler.request(true);
    } else if (msg.type === "tool") {
      if (tools.put(msg.block)) scheduler.request(true);
    }
  };
  const onStop = () => {
    stop.disabled = true;
    stop.textContent = "Stopping…";
    model.send({ type: "stop" });
  };
  stop.addEventListener("click", onStop);
  const unsubscribe = subscribe(model, { "msg:custom": onMsg });

  scheduler.request(true);
  model.send({ type: "resync" }); // whatever was sent before this view existed

  return () => {
    unCopy();
    stop.removeEventListener("click", onStop);
    unsubscribe();
  };
}

export default { render };
