// Subscribes handlers to a widget model's events; returns the function that
// unsubscribes them all (what an anywidget `render` returns for cleanup).
export function subscribe(model, handlers) {
  const entries = Object.entries(handlers);
  for (const [event, fn] of entries) model.on(event, fn);
  return () => {
    for (const [event, fn] of entries) model.off(event, fn);
  };
}

// -- the `messages` trait, grown by appending ---------------------------------------------
//
// The kernel keeps the whole `messages` list in its trait, but sends a front end only
// what changed: {type: "messages", base, rev, count, upsert}. Applied to the list at
// revision `base`, `upsert` (each message replaces the one with its id, or is appended)
// gives revision `rev`, of `count` messages. A front end at another revision missed
// something (a message sent before it listened, a page reload): it asks the kernel
// with {type: "sync", rev}, and gets the changes since `rev`, or the whole list as state.

// Pure: the list after `msg`, or why not. Returns {status: "applied", messages},
// {status: "duplicate"} (already there), or {status: "gap"} (ask the kernel).
export function applyMessages(messages, rev, msg) {
  if (!Number.isInteger(msg.base) || !Number.isInteger(msg.rev) || !Array.isArray(msg.upsert)) {
    return { status: "gap" };
  }
  if (msg.rev <= rev) return { status: "duplicate" };
  if (msg.base !== rev) return { status: "gap" };
  const out = messages.slice();
  const index = new Map(out.map((m, i) => [m.id, i]));
  for (const m of msg.upsert) {
    const i = index.get(m.id);
    if (i === undefined) {
      index.set(m.id, out.length);
      out.push(m);
    } else {
      out[i] = m;
    }
  }
  if (out.length !== msg.count) return { status: "gap" };
  return { status: "applied", messages: out };
}

// Keeps `model`'s `messages` (and `_messages_rev`) up to date from the kernel's change
// messages. Call it from anywidget's `initialize`, so the model is current even while no
// view is rendered. Sets the model locally (views see the usual change events); nothing
// is sent back. Returns the cleanup function.
export function syncMessages(model) {
  const ask = () => model.send({ type: "sync", rev: model.get("_messages_rev") ?? 0 });
  const onMsg = (msg) => {
    if (!msg || msg.type !== "messages") return;
    const rev = model.get("_messages_rev") ?? 0;
    const r = applyMessages(model.get("messages") || [], rev, msg);
    if (r.status === "applied") {
      model.set("_messages_rev", msg.rev);
      model.set("messages", r.messages);
    } else if (r.status === "gap") {
      ask();
    }
  };
  model.on("msg:custom", onMsg);
  // Changes sent after the state this model was made from, but before this listener,
  // were lost: ask (the kernel answers only if there is something to catch up on).
  ask();
  return () => model.off("msg:custom", onMsg);
}
