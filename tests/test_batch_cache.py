"""The reply cache: ``Client(cache=PATH)`` answers a request already in a store (its
own, or a batch's) at once, with no request sent, marked cached."""

from __future__ import annotations

from pathlib import Path

import pytest

import nbstream
from nbstream import APIStatusError, Client, Conversation, TextDelta
from nbstream._notebook.readout import readout, readout_text
from tests.batchkit import KEY, ScriptedModel, answer, any_slice_of, by_index
from tests.clientkit import MODES, chat, collect
from tests.loopback import LoopbackServer


def cached_client(srv: LoopbackServer, path: Path, **kw: object) -> Client:
    return Client(
        base_url=srv.base_url,
        api_key=KEY,
        model="m",
        cache=path,
        retry_delay=0.01,
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("mode", MODES)
def test_a_second_ask_is_answered_from_the_cache_without_a_request(
    server: LoopbackServer, tmp_path: Path, mode: str
) -> None:
    server.serve(ScriptedModel())
    path = tmp_path / "cache.sqlite"
    first = chat(cached_client(server, path), mode, "hello", temperature=0)
    assert first.text == answer("hello") and "cached" not in first.extra
    assert len(server.requests) == 1
    # a new client (a restarted kernel) on the same file
    again = chat(cached_client(server, path), mode, "hello", temperature=0)
    assert len(server.requests) == 1  # nothing was sent
    assert again.extra["cached"] is True and again.status == "complete"
    assert (again.text, again.finish_reason) == (first.text, first.finish_reason)
    assert again.usage is not None and again.usage.output_tokens == 3
    line = readout_text(readout(again))
    assert line.startswith("complete (cached)") and "first token" not in line
    # another parameter is another request
    chat(cached_client(server, path), mode, "hello", temperature=1)
    assert len(server.requests) == 2
    # the stream of a cached answer carries its events, as a live one does
    events, turn = collect(cached_client(server, path), mode, "hello", temperature=0)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == first.text
    assert turn.extra["cached"] and len(server.requests) == 2
    assert any_slice_of(KEY, path.read_bytes()) is None


def test_a_conversation_replays_from_the_cache_with_its_history(
    server: LoopbackServer, tmp_path: Path
) -> None:
    server.serve(ScriptedModel())
    path = tmp_path / "conv.sqlite"
    conv = Conversation(cached_client(server, path), system="Be brief.")
    conv.send("one")
    conv.send("two")
    assert len(server.requests) == 2
    rerun = Conversation(cached_client(server, path), system="Be brief.")
    assert [rerun.send(m).text for m in ("one", "two")] == [
        answer("one"),
        answer("two"),
    ]
    assert len(server.requests) == 2
    assert all(t.extra.get("cached") for t in rerun.transcript)
    # the same second message after another first one is another request
    other = Conversation(cached_client(server, path), system="Be brief.")
    other.send("uno")
    other.send("two")
    assert len(server.requests) == 4


def test_failures_are_not_cached(server: LoopbackServer, tmp_path: Path) -> None:
    server.serve(ScriptedModel(by_index({0: ["500"]}, 1000)))
    path = tmp_path / "fail.sqlite"
    with pytest.raises(APIStatusError):
        cached_client(server, path, max_retries=0).chat("q0")
    assert cached_client(server, path).chat("q0").text == answer("q0")
    assert len(server.requests) == 2


def test_a_batch_store_answers_the_same_question_asked_in_a_cell(
    server: LoopbackServer, tmp_path: Path
) -> None:
    server.serve(ScriptedModel())
    client = Client(base_url=server.base_url, api_key=KEY, model="m")
    job = nbstream.batch(
        ["q1", "q2"], client=client, store=tmp_path / "b.sqlite", temperature=0
    ).wait()
    assert len(server.requests) == 2
    turn = cached_client(server, Path(job.store)).chat("q2", temperature=0)
    assert turn.extra["cached"] and turn.text == answer("q2")
    assert len(server.requests) == 2


def test_nbstream_cache_in_the_environment_turns_the_cache_on(
    server: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.serve(ScriptedModel())
    monkeypatch.setenv("NBSTREAM_CACHE", str(tmp_path / "env.sqlite"))
    make = lambda **kw: Client(base_url=server.base_url, model="m", **kw)  # noqa: E731
    make().chat("hi")
    assert make().chat("hi").extra["cached"] and len(server.requests) == 1
    assert make(cache=False).cache is None
    make(cache=False).chat("hi")
    assert len(server.requests) == 2
