// The live view of one streaming reply (the %%chat cell output).
import { addCopyButtons, handleCopyClicks, LiveMarkdown } from "./markdown.js";
import { subscribe } from "./model_events.js";
import { readoutText } from "./readout.js";
import { makeScheduler, TextStream } from "./text_stream.js";
import "./reply.css";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
}

function render({ model, el: host }) {
  const stream = new TextStream();
  const thinkingBody = el("div", { class: "nbs-thinking-body" });
  const thinking = el("details", { class: "nbs-thinking", hidden: "" },
    el("summary", {}, "Reasoning"), thinkingBody);
  const body = el("div", { class: "nbs-body", role: "log", "aria-live": "polite" });
  const stop = el("button", { class: "nbs-stop", type: "button", "aria-label": "Stop" }, "Stop");
  const readout = el("span", { class: "nbs-readout" });
  const error = el("div", { class: "nbs-error", role: "alert", hidden: "" });
  const root = el("div", { class: "nbs-reply" }, thinking, body, error,
    el("div", { class: "nbs-bar" }, stop, readout));
  host.append(root);
  const unCopy = handleCopyClicks(body);

  let live = {};
  const md = new LiveMarkdown(body); // redraws only the last block while streaming
  const paint = () => {
    md.render(stream.text);
    addCopyButtons(body);
    if (stream.reasoning) {
      thinking.hidden = false;
      thinkingBody.textContent = stream.reasoning;
    }
    const status = model.get("status");
    readout.textContent = readoutText({ ...model.get("readout"), ...live, status });
    stop.hidden = status !== "streaming";
    const err = model.get("error");
    error.hidden = !err;
    error.textContent = err || "";
    root.dataset.status = status;
  };
  const scheduler = makeScheduler(paint);

  const fromTraits = () => {
    if (model.get("status") !== "streaming") {
      stream.snapshot({ seq: Number.MAX_SAFE_INTEGER, text: model.get("text"),
                        reasoning: model.get("reasoning") });
      live = {};
    }
    scheduler.request(true);
  };
  const onMsg = (msg) => {
    if (msg.type === "delta") {
      const r = stream.delta(msg);
      if (r === "gap") model.send({ type: "resync" });
      if (msg.readout) live = msg.readout;
      if (r === "applied" || msg.readout) scheduler.request();
    } else if (msg.type === "snapshot") {
      if (msg.readout) live = msg.readout;
      if (stream.snapshot(msg)) scheduler.request(true);
    }
  };
  const onStop = () => {
    stop.disabled = true;
    stop.textContent = "Stopping…";
    model.send({ type: "stop" });
  };
  stop.addEventListener("click", onStop);
  const unsubscribe = subscribe(model, {
    "msg:custom": onMsg,
    "change:status": fromTraits,
    "change:text": fromTraits,
    "change:error": fromTraits,
    "change:readout": fromTraits,
  });

  fromTraits();
  if (model.get("status") === "streaming") model.send({ type: "resync" });

  return () => {
    unCopy();
    stop.removeEventListener("click", onStop);
    unsubscribe();
  };
}

export default { render };
