"""``%%chat`` where it runs outside JupyterLab: terminal IPython and nbclient."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pexpect
import pytest
from nbclient import NotebookClient

from tests.kernel import clean_env
from tests.loopback import STALL, LoopbackServer, Reply, openai_chunks

USAGE = {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}


def _env(srv: LoopbackServer, tmp: Path) -> dict[str, str]:
    return clean_env(
        NBSTREAM_BASE_URL=srv.base_url,
        NBSTREAM_MODEL="m",
        IPYTHONDIR=str(tmp),
        TERM="dumb",
        PYTHONUNBUFFERED="1",
    )


@pytest.fixture
def ipython(server: LoopbackServer, tmp_path: Path) -> Iterator[pexpect.spawn]:
    child = pexpect.spawn(
        sys.executable,
        [
            "-m",
            "IPython",
            "--simple-prompt",
            "--no-banner",
            "--colors=NoColor",
            "--HistoryManager.enabled=False",
        ],
        env=_env(server, tmp_path),
        encoding="utf-8",
        timeout=20,
        cwd=str(tmp_path),
    )
    child.expect(r"In \[1\]: ")
    child.sendline("%load_ext nbstream")
    child.expect(r"In \[2\]: ")
    yield child
    child.sendeof()
    child.close(force=True)


def send_cell(child: pexpect.spawn, *lines: str) -> None:
    for line in lines:
        child.sendline(line)
    child.sendline("")  # two blank lines end a cell-magic cell at the simple prompt
    child.sendline("")


def test_terminal_streams_the_reply_to_stdout(
    ipython: pexpect.spawn, server: LoopbackServer
) -> None:
    words = [" The", " sky", " is", " blue", "."]
    server.enqueue(Reply.events(openai_chunks(words, usage=USAGE), delay=0.05))
    send_cell(ipython, "%%chat", "Why is the sky blue?")
    # the first words are on screen before the server has sent the rest
    ipython.expect(" The sky")
    assert server.requests[-1].finished_at is None
    ipython.expect(r"\[complete")
    ipython.expect(r"In \[\d+\]: ")
    out = ipython.before
    assert "4 in" in out and "6 out tokens" in out and "finish: stop" in out
    assert server.requests[-1].json["messages"] == [
        {"role": "user", "content": "Why is the sky blue?"}
    ]


def test_terminal_ctrl_c_stops_and_keeps_the_partial_reply(
    ipython: pexpect.spawn, server: LoopbackServer
) -> None:
    chunks = [
        f"data: {c}\n\n".encode()
        for c in openai_chunks([" Once", " upon"], finish=None, done=False)
    ]
    server.enqueue(Reply(chunks=[*chunks, STALL]))
    send_cell(ipython, "%%chat", "Tell me a story")
    ipython.expect(" Once upon")
    seen = server.requests[-1]
    ipython.sendintr()
    assert server.wait_for(lambda: seen.client_closed_at is not None, 5)
    ipython.expect(r"\[stopped: the partial reply is kept\]")
    ipython.expect("KeyboardInterrupt")
    ipython.expect(r"In \[\d+\]: ")
    ipython.sendline(
        "import nbstream; t = nbstream.conversation().transcript[-1]; "
        "print(t.status, repr(t.text))"
    )
    ipython.expect(r"cancelled ' Once upon'")


def _notebook(cells: list[str]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


def test_nbclient_runs_the_cell_to_one_final_output(
    server: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in _env(server, tmp_path).items():
        monkeypatch.setenv(k, v)
    words = [f" w{i}" for i in range(25)]
    results = []
    for _ in range(2):
        # paced: nbclient must wait for the whole reply before the next cell
        server.enqueue(Reply.events(openai_chunks(words, usage=USAGE), delay=0.01))
        nb = _notebook(
            [
                "%load_ext nbstream",
                "%%chat --new\nCount for me",
                "import nbstream\nprint(nbstream.conversation().transcript[-1].status)",
            ]
        )
        NotebookClient(
            nb,
            timeout=60,
            kernel_name="python3",
            resources={"metadata": {"path": str(tmp_path)}},
        ).execute()
        outputs = nb.cells[1].outputs
        assert len(outputs) == 1 and outputs[0].output_type == "display_data"
        data = outputs[0].data
        assert "application/vnd.jupyter.widget-view+json" not in data
        assert "".join(words).strip() in data["text/html"]
        assert "".join(words) in data["text/plain"]
        # the next cell ran after the reply had finished
        assert nb.cells[2].outputs[0].text.strip() == "complete"
        results.append(dict(data))
    assert results[0] == results[1]  # deterministic: nothing that varies run to run
