"""Record the replies of notebooks/batch_evaluation.ipynb, then save its outputs.

No API key is available where this project is built and tested, so the replies come
from a scripted stand-in for ``gpt-4o-mini``: an OpenAI-compatible server on loopback
(tests/loopback.py) that labels a review by keywords (so sarcasm and mixed reviews
fool it, as they fool small models), streams its answer a word at a time at a pace
chosen per review (first token after 0.3-0.7 s, then 20-40 ms a word), and reports
token usage as OpenAI does. The notebook runs against it with ``NBSTREAM_RECORD``;
then once more replaying the recording at its pace, to save the outputs and the plot.

    PYTHONPATH=. python notebooks/recordings/make_batch_recordings.py
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.loopback import LoopbackServer, Reply, Seen, openai_chunks  # noqa: E402

NOTEBOOK = ROOT / "notebooks" / "batch_evaluation.ipynb"
RECORDING = ROOT / "notebooks" / "recordings" / "batch_evaluation.jsonl"
POSITIVE = {
    "great", "excellent", "love", "best", "recommend", "fantastic", "happy", "amazing",
    "delightful", "wonderful", "perfect", "perfectly",
}  # fmt: skip
NEGATIVE = {
    "terrible", "refund", "broke", "rude", "worst", "waste", "poor", "disappointed",
    "never", "bad",
}  # fmt: skip


def stand_in(seen: Seen) -> Reply:
    body = json.loads(seen.body)
    prompt = body["messages"][-1]["content"]
    review = prompt.rsplit("Review:", 1)[-1]
    words = re.findall(r"[a-z]+", review.lower())
    pos = [w for w in words if w in POSITIVE]
    neg = [w for w in words if w in NEGATIVE]
    score = len(pos) - len(neg)
    label = "Positive" if score > 0 else "Negative" if score < 0 else "Neutral"
    cues = ", ".join(dict.fromkeys(pos + neg)) or "no strong opinion"
    text = f"{label}. The review says: {cues}."
    pieces = [w + " " for w in text.split(" ")]
    pieces[-1] = pieces[-1].rstrip()
    seed = int(hashlib.sha256(review.encode()).hexdigest()[:8], 16)
    usage = {
        "prompt_tokens": len(prompt) // 4 + 8,
        "completion_tokens": len(pieces),
        "total_tokens": len(prompt) // 4 + 8 + len(pieces),
    }
    reply = Reply.events(
        openai_chunks(pieces, usage=usage), delay=0.02 + (seed % 21) / 1000
    )
    reply.delay_headers = 0.3 + (seed % 400) / 1000
    return reply


def run(env: dict[str, str]) -> nbformat.NotebookNode:
    saved = dict(os.environ)
    for var in list(os.environ):
        if var.startswith(("NBSTREAM_", "OPENAI_", "ANTHROPIC_")):
            del os.environ[var]
    os.environ.update(env)
    try:
        nb = nbformat.read(NOTEBOOK, as_version=4)
        NotebookClient(
            nb, timeout=300, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
        ).execute()
        return nb
    finally:
        os.environ.clear()
        os.environ.update(saved)


def main() -> None:
    RECORDING.unlink(missing_ok=True)
    with LoopbackServer(keep_alive=True) as srv:
        srv.serve(stand_in)
        run({"NBSTREAM_BASE_URL": srv.base_url, "NBSTREAM_RECORD": str(RECORDING)})
    nb = run({"NBSTREAM_REPLAY": str(RECORDING.parent), "NBSTREAM_REPLAY_SPEED": "1"})
    nbformat.write(nb, NOTEBOOK)
    print(f"{RECORDING.name}: {sum(1 for _ in RECORDING.open())} exchanges")


if __name__ == "__main__":
    main()
