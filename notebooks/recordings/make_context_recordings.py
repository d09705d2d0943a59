"""Build recordings/context_figure.jsonl: the replies of a *scripted* vision model to
the figure cells of notebooks/context_and_cost.ipynb.

The local model (SmolLM2) cannot see images and this project holds no API keys, so the
three questions about the figure are answered by a small server in this script that
sends the replies written in SCRIPTED below (ours, written to be true of the chart; no
model produced them) as an OpenAI-style stream, one word per event, with no usage (so
nbstream estimates it, and says so). The notebook names the model ``scripted-vision``.

The request bodies are real: the figure is drawn by running the notebook's own cells
tagged ``data``, and sent by nbstream exactly as the notebook's cells send it, through
a ``Client(record=…)``. A change to those cells or to how nbstream sends an image shows
under nbval as a request that matches no recording; run this again then:

    python notebooks/recordings/make_context_recordings.py
"""

from __future__ import annotations

import json
import sys
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import matplotlib
from nbstream import Client, Conversation
from nbstream._core.context import Named

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE.parent / "context_and_cost.ipynb"
OUT = HERE / "context_figure.jsonl"
MODEL = "scripted-vision"

FIRST = "What does this chart show? Answer in two sentences."
FOLLOW_UP = "Which city grew most from January to July?"
TREND = "Describe the trend in one sentence."  # the %%chat --with fig cell
SCRIPTED = {
    FIRST: "It shows the monthly revenue of Paris, Rome and Oslo in 2024. Paris is "
    "highest all year and peaks in December; Oslo is lowest, with its low point in "
    "February.",
    FOLLOW_UP: "Paris: its line climbs the most between January and July, by about "
    "45, ahead of Rome and Oslo.",
    TREND: "All three cities rise to a summer high, fall back in the autumn and "
    "climb again in December.",
}


def asked(body: dict[str, Any]) -> str:
    """The first text of the last user message."""
    content = body["messages"][-1]["content"]
    if isinstance(content, list):
        content = next(p["text"] for p in content if p.get("type") == "text")
    return str(content).split("\n\n")[0]


class Scripted(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        words = SCRIPTED[asked(body)].split(" ")
        events = [{"role": "assistant", "content": ""}]
        events += [{"content": w if i == 0 else " " + w} for i, w in enumerate(words)]
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        for i, delta in enumerate(events):
            finish = "stop" if i == len(events) - 1 else None
            chunk = {
                "id": "chatcmpl-scripted",
                "object": "chat.completion.chunk",
                "model": MODEL,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def notebook_data() -> dict[str, Any]:
    """Run the notebook's cells tagged ``data`` (the table and the figure)."""
    matplotlib.use("agg")  # (its plt.show() is then a no-op that warns: not shown)
    warnings.filterwarnings("ignore", "FigureCanvasAgg is non-interactive")
    ns: dict[str, Any] = {}
    cells = json.loads(NOTEBOOK.read_text("utf-8"))["cells"]
    for cell in cells:
        if "data" in cell.get("metadata", {}).get("tags", []):
            exec("".join(cell["source"]), ns)
    return ns


def main() -> int:
    fig = notebook_data()["fig"]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    OUT.unlink(missing_ok=True)
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1"
        client = Client(base_url=url, model=MODEL, api="openai", record=OUT)
        conv = Conversation(client)  # the notebook's conversation with the figure
        for message in ([FIRST, fig], FOLLOW_UP):
            print(conv.send(message).text)
        # %%chat -m scripted-vision -c vision --with fig: the cell, then the variable
        print(client.chat([TREND, Named("fig", fig)]).text)
        client.close()
    finally:
        server.shutdown()
    print(f"{OUT.relative_to(HERE.parent)}: {OUT.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
