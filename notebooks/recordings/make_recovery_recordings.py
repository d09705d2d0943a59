"""Build recordings/recovery.jsonl: real broken streams, and their recovery, for
notebooks/recovery.ipynb.

The model is real: SmolLM2 on llama.cpp's server (``nbstream.local``). The break is real
too: a small proxy between nbstream and the server relays every request, and cuts the
connection in the middle of the answer to every *first* request of a question (one
whose last message is the user's), after ``CUT_AFTER`` bytes of the body. The request
that follows (the partial reply as a trailing assistant message: ``prefill``) passes
untouched. The notebook is then executed with ``NBSTREAM_RECORD`` pointing at the
recording, so every request is recorded exactly as its cells send it, broken body
included (a recording keeps where a body broke, and replay breaks it there again).

Run it again when the notebook's requests change (nbval then reports a request that
matches no recording):

    python notebooks/recordings/make_recovery_recordings.py
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import threading
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbstream.local import start

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE.parent / "recovery.ipynb"
OUT = HERE / "recovery.jsonl"
CUT_AFTER = 12000  # bytes of the answer's body before the cut: ~40 events of SmolLM2


class CuttingProxy:
    """Relays HTTP/1.1 requests to ``upstream``; cuts first answers mid-body."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.cuts = 0
        ready = threading.Event()
        threading.Thread(target=self._main, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _main(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def boot() -> None:
            server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()

        self.loop.run_until_complete(boot())
        self.loop.run_forever()

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length)
        messages = json.loads(body).get("messages", [])
        cut = bool(messages) and messages[-1].get("role") == "user"
        up_reader, up_writer = await asyncio.open_connection(
            "127.0.0.1", self.upstream_port
        )
        up_writer.write(head + body)
        await up_writer.drain()
        answer_head = await up_reader.readuntil(b"\r\n\r\n")
        # one request per connection: the client must not reuse it
        writer.write(answer_head[:-2] + b"connection: close\r\n\r\n")
        sent = 0
        while True:
            data = await up_reader.read(512)
            if not data:
                break
            if cut and sent + len(data) > CUT_AFTER:
                writer.write(data[: CUT_AFTER - sent])
                await writer.drain()
                self.cuts += 1
                writer.transport.abort()  # the connection drops mid-reply
                up_writer.close()
                return
            writer.write(data)
            sent += len(data)
            await writer.drain()
        writer.close()
        up_writer.close()


def main() -> None:
    cache = tempfile.mkdtemp()
    os.environ["XDG_CACHE_HOME"] = cache
    server = start(port=0, log=Path(cache) / "llama.log")
    try:
        upstream = int(server.base_url.rsplit(":", 1)[1].split("/")[0])
        proxy = CuttingProxy(upstream)
        OUT.unlink(missing_ok=True)
        nb = nbformat.read(NOTEBOOK, as_version=4)
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("NBSTREAM_", "OPENAI_", "ANTHROPIC_"))
            },
            "NBSTREAM_BASE_URL": f"http://127.0.0.1:{proxy.port}/v1",
            "NBSTREAM_MODEL": "SmolLM2-135M-Instruct",
            "NBSTREAM_RECORD": str(OUT),
        }
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)
        try:
            NotebookClient(
                nb, timeout=300, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
            ).execute()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        lines = OUT.read_text().splitlines()
        broke = sum(1 for line in lines if json.loads(line)["response"].get("broke"))
        print(f"{OUT}: {len(lines)} exchanges, {broke} broken ({proxy.cuts} cuts)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
