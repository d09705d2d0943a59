// Subscribes handlers to a widget model's events; returns the function that
// unsubscribes them all (what an anywidget `render` returns for cleanup).
export function subscribe(model, handlers) {
  const entries = Object.entries(handlers);
  for (const [event, fn] of entries) model.on(event, fn);
  return () => {
    for (const [event, fn] of entries) model.off(event, fn);
  };
}
