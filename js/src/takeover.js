// How a reply was taken over by another model (fallback, recovery): the partial
// replies a restart superseded, folded away, and a line per takeover ("↻ the connection
// dropped at 1,204 characters; continued by llama3"). Text only: never parsed as HTML.

export function renderTakeover(before, after, notes = [], superseded = []) {
  before.replaceChildren(
    ...superseded.map((text) => {
      const box = document.createElement("details");
      box.className = "nbs-superseded";
      const summary = document.createElement("summary");
      summary.textContent = "Superseded reply";
      const body = document.createElement("p");
      body.textContent = text;
      box.append(summary, body);
      return box;
    }),
  );
  after.replaceChildren(
    ...notes.map((note) => {
      const line = document.createElement("p");
      line.className = "nbs-takeover";
      line.textContent = `↻ ${note}`;
      return line;
    }),
  );
  before.hidden = !superseded.length;
  after.hidden = !notes.length;
}
