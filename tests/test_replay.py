"""Record a stream against a real server, then replay it offline through the same client."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from nbstream import Client, Conversation
from nbstream._http import replay
from nbstream._http.replay import Recording, ReplayError
from tests.conftest import STREAMS
from tests.loopback import LoopbackServer, Reply, openai_chunks

SECRET = "sk-test-RECORDSECRET-0123456789abcdef"


def test_a_recorded_stream_replays_offline_to_the_same_turn(
    server: LoopbackServer, tmp_path: Path
) -> None:
    rec = tmp_path / "rec.jsonl"
    # a real recorded provider stream, paced, with a multi-byte character split by
    # the chunking so a chunk is not valid UTF-8 on its own
    body = (STREAMS / "deepseek_reasoner_reasoning_content.sse").read_bytes()
    server.enqueue(Reply.sse(body, chunk_size=97, delay=0.002))
    live = Client(
        base_url=server.base_url, model="deepseek-reasoner", api_key=SECRET, record=rec
    ).chat("Hello", temperature=0)
    assert live.status == "complete" and "😊" in live.text

    text = rec.read_text()
    assert SECRET not in text  # the request is recorded without headers, so no key
    entry = json.loads(text.splitlines()[0])
    assert entry["request"]["path"] == "/chat/completions"
    assert entry["request"]["body"]["messages"] == [
        {"role": "user", "content": "Hello"}
    ]

    server.close()  # nothing is listening any more: replay must not need the network
    replayed = Client(
        base_url="http://127.0.0.1:9/v1",
        model="deepseek-reasoner",
        replay=rec,
        replay_speed=0,
    ).chat("Hello", temperature=0)
    assert replayed.text == live.text
    assert replayed.reasoning == live.reasoning
    assert replayed.usage == live.usage
    assert replayed.finish_reason == live.finish_reason == "stop"
    assert replayed.metrics.deltas == live.metrics.deltas


def test_replay_keeps_the_recorded_pace(server: LoopbackServer, tmp_path: Path) -> None:
    rec = tmp_path / "paced.jsonl"
    server.enqueue(Reply.events(openai_chunks([" a", " b", " c", " d"]), delay=0.05))
    Client(base_url=server.base_url, model="m", record=rec).chat("pace")
    turn = Client(base_url=server.base_url, model="m", replay=rec).chat("pace")
    # five gaps of ~50 ms were recorded; replay at speed 1 takes about as long
    assert turn.metrics.elapsed_s is not None and turn.metrics.elapsed_s >= 0.15
    fast = Client(base_url=server.base_url, model="m", replay=rec, replay_speed=0)
    assert fast.chat("pace").text == " a b c d"


@pytest.mark.parametrize("speed", [0.5, 1.0, 2.0, 4.0])
def test_replay_speed_divides_the_recorded_gaps(
    server: LoopbackServer,
    tmp_path: Path,
    speed: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """NBSTREAM_REPLAY_SPEED=2 is twice as fast (it used to be half as fast)."""
    rec = tmp_path / "paced.jsonl"
    server.enqueue(Reply.events(openai_chunks([" a", " b", " c"]), delay=0.02))
    Client(base_url=server.base_url, model="m", record=rec).chat("pace")
    recorded = sum(dt for dt, _ in Recording.load(rec).exchanges[0].chunks if dt > 0)
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(dt: float, *a: Any) -> None:
        waits.append(dt)
        await real_sleep(0)

    monkeypatch.setattr(replay.asyncio, "sleep", sleep)
    monkeypatch.setenv("NBSTREAM_REPLAY_SPEED", str(speed))
    turn = Client(base_url=server.base_url, model="m", replay=rec).chat("pace")
    assert turn.text == " a b c"
    assert sum(waits) == pytest.approx(recorded / speed)


def test_replay_refuses_a_request_that_differs_and_says_how(
    server: LoopbackServer, tmp_path: Path
) -> None:
    rec = tmp_path / "rec.jsonl"
    server.enqueue(Reply.events(openai_chunks([" Paris"])))
    Client(base_url=server.base_url, model="m", record=rec).chat(
        "Capital of France?", temperature=0
    )
    client = Client(base_url=server.base_url, model="m", replay=rec, replay_speed=0)
    with pytest.raises(ReplayError) as err:
        client.chat("Capital of Spain?", temperature=0)
    msg = str(err.value)
    assert "messages[0].content" in msg
    assert '"Capital of Spain?"' in msg and '"Capital of France?"' in msg
    assert err.value.turn is not None and err.value.turn.status == "error"
    with pytest.raises(ReplayError, match="top_p is sent but was not recorded"):
        client.chat("Capital of France?", temperature=0, top_p=1)
    with pytest.raises(ReplayError, match="another api"):
        Client(base_url=server.base_url, model="m", api="anthropic", replay=rec).chat(
            "Capital of France?", temperature=0
        )


def test_a_conversation_replays_turn_by_turn_and_a_folder_loads_every_file(
    server: LoopbackServer, tmp_path: Path
) -> None:
    folder = tmp_path / "recordings"
    server.enqueue(
        Reply.events(openai_chunks([" One."])), Reply.events(openai_chunks([" Two."]))
    )
    conv = Conversation(
        Client(base_url=server.base_url, model="m", record=folder / "a.jsonl"),
        system="Count.",
    )
    conv.send("first")
    conv.send("second")
    # the same question asked twice replays its recordings in turn
    server.enqueue(
        Reply.events(openai_chunks([" x"])), Reply.events(openai_chunks([" y"]))
    )
    again = Client(base_url=server.base_url, model="m", record=folder / "b.jsonl")
    again.chat("same")
    again.chat("same")

    replay = Client(base_url=server.base_url, model="m", replay=folder, replay_speed=0)
    conv2 = Conversation(replay, system="Count.")
    assert conv2.send("first").text == " One."
    assert conv2.send("second").text == " Two."
    assert [replay.chat("same").text for _ in range(2)] == [" x", " y"]


def test_nothing_to_replay_says_how_to_record(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="NBSTREAM_RECORD="):
        Client(base_url="http://127.0.0.1:9/v1", replay=tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "something else"}\n')
    with pytest.raises(ReplayError, match="not an nbstream recording"):
        Recording.load(bad)


def test_environment_switches_replay_on(
    server: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = tmp_path / "env.jsonl"
    monkeypatch.setenv("NBSTREAM_RECORD", str(rec))
    server.enqueue(Reply.events(openai_chunks([" recorded"])))
    assert Client(base_url=server.base_url, model="m").chat("hi").text == " recorded"
    monkeypatch.delenv("NBSTREAM_RECORD")
    monkeypatch.setenv("NBSTREAM_REPLAY", str(rec))
    monkeypatch.setenv("NBSTREAM_REPLAY_SPEED", "0")
    before = len(server.requests)
    assert Client(base_url=server.base_url, model="m").chat("hi").text == " recorded"
    assert len(server.requests) == before  # answered from the file


def test_a_stream_that_broke_is_recorded_and_replays_the_same_break(
    server: LoopbackServer, tmp_path: Path
) -> None:
    """A recording keeps where the connection dropped; replay drops it there too, so a
    recovery can be replayed offline exactly as it happened."""
    from nbstream import APIConnectionError
    from tests.loopback import DROP

    rec = tmp_path / "broken.jsonl"
    reply = Reply.events(openai_chunks([" Once", " upon"], finish=None, done=False))
    reply.chunks.append(DROP)
    server.enqueue(reply)
    client = Client(base_url=server.base_url, model="m", record=rec, max_retries=0)
    with pytest.raises(APIConnectionError) as live:
        client.chat("Tell me a story")
    client.close()
    (ex,) = Recording.load(rec).exchanges
    assert ex.broke is not None and "Error" in ex.broke
    replayer = Client(base_url=server.base_url, model="m", replay=rec, replay_speed=0)
    with pytest.raises(APIConnectionError) as again:
        replayer.chat("Tell me a story")
    assert again.value.turn is not None and live.value.turn is not None
    assert again.value.turn.text == live.value.turn.text == " Once upon"
    assert len(server.requests) == 1  # the replay sent nothing


def test_a_prompt_with_half_an_emoji_is_recorded_and_replayed(
    server: LoopbackServer, tmp_path: Path
) -> None:
    """A lone surrogate in the prompt (half an escape pair) cannot be written as UTF-8:
    the recording keeps it as its JSON escape, so the exchange is not lost, and replay
    answers the same prompt."""
    rec = tmp_path / "rec.jsonl"
    prompt = "half \ud83d pair, caf\u00e9"
    server.enqueue(Reply.events(openai_chunks(["Hi", " there"])))
    live = Client(base_url=server.base_url, model="m", record=rec).chat(prompt)
    assert live.status == "complete" and live.text == "Hi there"
    (entry,) = [json.loads(line) for line in rec.read_text().splitlines()]
    assert entry["request"]["body"]["messages"][-1]["content"] == prompt
    server.close()
    replayed = Client(
        base_url="http://127.0.0.1:9/v1", model="m", replay=rec, replay_speed=0
    ).chat(prompt)
    assert replayed.text == "Hi there"
