"""What a reply cost: ``turn.cost`` against the price dataset, the readout, the totals.

No price is written here: every expected figure is worked out in the test from the
prices genai-prices itself finds for the model (its own lookup, by the base URL's
provider or by name), times the token counts the recorded stream reports, so the test
checks that nbstream gives each kind of token (uncached input, cache reads and writes,
output, reasoning, web searches) to the right price, not what the prices are.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest
from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import TieredPrices

from nbstream import (
    ChatWidget,
    Client,
    Conversation,
    Cost,
    ErrorInfo,
    Request,
    ToolResult,
    Turn,
    Usage,
)
from nbstream._core.pipeline import Pipeline
from nbstream._core.pricing import format_usd, price_usage
from nbstream._core.record import Attempt
from nbstream._core.transcript import Api, Transcript
from nbstream._notebook.readout import readout, readout_text
from nbstream._notebook.totals import totals, totals_text
from tests.conftest import STREAMS, api_of, expected
from tests.loopback import LoopbackServer, Reply, anthropic_chunks, openai_chunks
from tests.toolkit import Call, openai_call_chunks

EXP = expected()
REPO = Path(__file__).resolve().parents[1]
OPENAI = "https://api.openai.com/v1"
ANTHROPIC = "https://api.anthropic.com"
PROXY = "http://127.0.0.1:4000/v1"  # a gateway on this machine: priced by name


# -- the dataset, read by the test ---------------------------------------------------------


def prices(model: str, base_url: str | None, at: float) -> Any:
    """The model's prices as genai-prices finds them (its own lookup)."""
    _provider, info = get_snapshot().find_provider_model(model, None, None, base_url)
    return info.get_prices(datetime.fromtimestamp(round(at), UTC))


def by_hand(
    p: Any,
    *,
    inp: int,
    out: int,
    read: int = 0,
    write: int = 0,
    write_1h: int = 0,
    reasoning: int = 0,
    searches: int = 0,
) -> Decimal:
    """Dollars for these counts at prices ``p``: each kind of token at its own price
    (uncached input is what is left of the input once the cache's part is taken)."""

    def per_m(key: str, fallback: str | None = None) -> Decimal:
        v = getattr(p, key, None)
        if v is None and fallback is not None:
            return per_m(fallback)
        if isinstance(v, TieredPrices):  # small counts: below the first tier
            assert inp <= v.tiers[0].start
            v = v.base
        return Decimal(v or 0) / 1_000_000

    def per_k(key: str) -> Decimal:
        return Decimal(getattr(p, key, None) or 0) / 1000

    usd = (inp - read - write) * per_m("input_mtok")
    usd += read * per_m("cache_read_mtok", "input_mtok")
    usd += (write - write_1h) * per_m("cache_write_mtok", "input_mtok")
    usd += write_1h * per_m("cache_write_1h_mtok", "cache_write_mtok")
    usd += (out - reasoning) * per_m("output_mtok")
    usd += reasoning * per_m("output_reasoning_mtok", "output_mtok")
    usd += searches * per_k("web_searches_kcount")
    usd += per_k("requests_kcount")  # this one request
    return usd


# -- turns from recorded streams -------------------------------------------------------------


def build(
    data: bytes,
    api: str,
    base_url: str,
    *,
    model: str = "m",
    prompt_chars: int = 0,
    end: str = "close",
) -> Turn:
    turn = Turn(
        Request([{"role": "user", "content": "Hi"}], model, cast(Api, api), base_url)
    )
    pipe = Pipeline(cast(Api, api), turn, prompt_chars=prompt_chars)
    for i, block in enumerate(b for b in data.split(b"\n\n") if b.strip()):
        pipe.feed(block + b"\n\n", 0.5 + 0.25 * i)
    if end == "close":
        pipe.close(9.0)
    return turn


def fixture(name: str, base_url: str, **kw: Any) -> Turn:
    return build((STREAMS / name).read_bytes(), api_of(name), base_url, **kw)


def sse(datas: list[str]) -> bytes:
    return b"".join(f"data: {d}\n\n".encode() for d in datas)


# -- known models, by host and by name ---------------------------------------------------------


@pytest.mark.parametrize("base_url", [OPENAI, PROXY])
def test_an_openai_reply_costs_its_tokens_at_the_models_prices(base_url: str) -> None:
    name = "openai_chat_text_usage.sse"
    turn = fixture(name, base_url)
    u = EXP[name]["usage"]
    p = prices("gpt-4o-2024-08-06", OPENAI, turn.created_at)
    want = by_hand(p, inp=u["prompt_tokens"], out=u["completion_tokens"])
    assert turn.cost == pytest.approx(float(want), rel=1e-12)
    c = turn.cost_details
    assert c is not None and not c.estimated and c.priced_as == ("openai:gpt-4o",)
    assert c.input_usd + c.output_usd == pytest.approx(c.total_usd)


ANTHROPIC_WITH_USAGE = [
    n
    for n in sorted(p.name for p in STREAMS.glob("anthropic_*.sse"))
    if EXP[n]["kind"] == "anthropic" and EXP[n]["usage"]
]


@pytest.mark.parametrize("name", ANTHROPIC_WITH_USAGE)
def test_every_recorded_anthropic_reply_is_priced_from_its_usage(name: str) -> None:
    turn = fixture(name, ANTHROPIC)
    u = EXP[name]["usage"]
    read, write = (
        u.get("cache_read_input_tokens", 0),
        u.get("cache_creation_input_tokens", 0),
    )
    searches = (u.get("server_tool_use") or {}).get("web_search_requests", 0)
    thinking = (u.get("output_tokens_details") or {}).get("thinking_tokens", 0)
    p = prices(cast(str, turn.model), ANTHROPIC, turn.created_at)
    want = by_hand(
        p,
        inp=u["input_tokens"] + read + write,
        out=u["output_tokens"],
        read=read,
        write=write,
        searches=searches,
        reasoning=thinking,
    )
    assert turn.cost == pytest.approx(float(want), rel=1e-12)
    if searches:  # the web search is billed on top of the tokens
        assert turn.cost > float(
            by_hand(p, inp=u["input_tokens"], out=u["output_tokens"])
        )


CACHED = {"read": 1800, "write": 600, "write_1h": 200}


def _with_cache(data: bytes) -> bytes:
    """The recorded stream, as if the prompt had met Anthropic's cache: reads, writes,
    and some of the writes for an hour."""
    text = data.decode()
    for old, new in [
        (
            '"cache_creation_input_tokens":0',
            f'"cache_creation_input_tokens":{CACHED["write"]}',
        ),
        ('"cache_read_input_tokens":0', f'"cache_read_input_tokens":{CACHED["read"]}'),
        (
            '"ephemeral_5m_input_tokens":0',
            f'"ephemeral_5m_input_tokens":{CACHED["write"] - CACHED["write_1h"]}',
        ),
        (
            '"ephemeral_1h_input_tokens":0',
            f'"ephemeral_1h_input_tokens":{CACHED["write_1h"]}',
        ),
    ]:
        assert old in text
        text = text.replace(old, new)
    return text.encode()


def test_anthropic_cache_reads_and_writes_each_cost_their_own_price() -> None:
    name = "anthropic_stop_sequence.sse"  # claude-haiku-4-5, usage in both events
    turn = build(_with_cache((STREAMS / name).read_bytes()), "anthropic", ANTHROPIC)
    u = EXP[name]["usage"]
    usage = turn.usage
    assert usage is not None
    assert usage.cached_input_tokens == CACHED["read"]
    assert usage.cache_write_tokens == CACHED["write"]
    assert usage.input_tokens == u["input_tokens"] + CACHED["read"] + CACHED["write"]
    p = prices("claude-haiku-4-5-20251001", ANTHROPIC, turn.created_at)
    assert p.cache_read_mtok < p.input_mtok < p.cache_write_mtok < p.cache_write_1h_mtok
    want = by_hand(
        p,
        inp=usage.input_tokens,
        out=u["output_tokens"],
        read=CACHED["read"],
        write=CACHED["write"],
        write_1h=CACHED["write_1h"],
    )
    assert turn.cost == pytest.approx(float(want), rel=1e-12)
    # and the readout says how much of the prompt the cache served and stored
    line = readout_text(readout(turn))
    assert (
        f"{usage.input_tokens} in ({CACHED['read']} cached, {CACHED['write']} written "
        f"to cache) · {u['output_tokens']} out tokens · {format_usd(want)} · "
    ) in line


@pytest.mark.parametrize(
    ("name", "base_url", "model"),
    [
        (
            "deepseek_reasoner_reasoning_content.sse",
            "https://api.deepseek.com",
            "deepseek-reasoner",
        ),
        ("deepseek_reasoner_reasoning_content.sse", PROXY, "deepseek-reasoner"),
        ("zai_glm47_reasoning_content.sse", PROXY, "glm-4.7"),
        (
            "groq_tool_call_x_groq_usage.sse",
            "https://api.groq.com/openai/v1",
            "openai/gpt-oss-120b",
        ),
        (
            "openrouter_comments_usage_cost.sse",
            "https://openrouter.ai/api/v1",
            "anthropic/claude-4.6-sonnet-20260217",
        ),
    ],
)
def test_reasoning_models_and_other_providers(
    name: str, base_url: str, model: str
) -> None:
    turn = fixture(name, base_url)
    u = EXP[name]["usage"]
    assert turn.model == model
    reasoning = (u.get("completion_tokens_details") or {}).get("reasoning_tokens", 0)
    assert turn.usage is not None and (turn.usage.reasoning_tokens or 0) == reasoning
    p = prices(model, None if base_url == PROXY else base_url, turn.created_at)
    want = by_hand(
        p, inp=u["prompt_tokens"], out=u["completion_tokens"], reasoning=reasoning
    )
    assert turn.cost == pytest.approx(float(want), rel=1e-12)


def test_reasoning_tokens_get_their_own_price_where_a_model_has_one() -> None:
    # Perplexity's deep research model bills reasoning apart from the rest of the output
    url, model = "https://api.perplexity.ai", "sonar-deep-research"
    p = prices(model, url, 1.8e9)
    assert (
        p.output_reasoning_mtok is not None and p.output_reasoning_mtok != p.output_mtok
    )
    usage = Usage(input_tokens=2000, output_tokens=900, reasoning_tokens=700)
    c = price_usage(usage, [model], url, when=1.8e9)
    assert c is not None
    want = by_hand(p, inp=2000, out=900, reasoning=700)
    assert c.total_usd == pytest.approx(float(want), rel=1e-12)
    flat = by_hand(p, inp=2000, out=900)  # as if reasoning were plain output
    assert c.total_usd != pytest.approx(float(flat))


# -- unknown: never a guess ------------------------------------------------------------------


def test_an_unknown_model_costs_none_and_says_cost_unknown() -> None:
    # a local model server: llama.cpp names its model, no dataset prices it
    turn = fixture("vllm_crusoe_llama33.sse", "http://127.0.0.1:8910/v1")
    assert turn.status == "complete" and turn.usage is not None
    assert turn.cost is None and turn.cost_details is None
    assert readout(turn)["cost_usd"] is None
    assert " · cost unknown · " in readout_text(readout(turn))


def test_a_provider_that_does_not_list_the_model_is_not_priced_by_another() -> None:
    # api.anthropic.com names Anthropic: an OpenAI model there is not OpenAI's price
    usage = Usage(input_tokens=1000, output_tokens=100)
    assert price_usage(usage, ["gpt-4o-mini"], ANTHROPIC) is None
    assert price_usage(usage, ["gpt-4o-mini"], PROXY) is not None


def test_a_turn_with_no_usage_costs_none_and_a_refused_request_nothing() -> None:
    turn = Turn(
        Request([{"role": "user", "content": "Hi"}], "gpt-4o-mini", "openai", OPENAI)
    )
    assert turn.cost is None  # still streaming
    turn.status = "error"
    turn.error = ErrorInfo("APITimeoutError", "no first byte within 10 s")
    assert turn.cost is None  # the server may have worked on it: unknown
    turn.error = ErrorInfo("APIStatusError", "rate limited", status_code=429)
    assert turn.cost == 0.0  # refused: nothing is billed
    assert "$0.00" in readout_text(readout(turn))


def test_contradictory_counts_are_not_priced() -> None:
    usage = Usage(input_tokens=100, output_tokens=10, cached_input_tokens=500)
    assert price_usage(usage, ["gpt-4o-mini"], OPENAI) is None


# -- estimated counts ----------------------------------------------------------------------


def test_estimated_tokens_give_an_estimated_cost_marked_as_such() -> None:
    # a server that sends no usage: nbstream counts, and the cost says it rests on that
    data = sse(openai_chunks(["one", " two", " three"]))
    turn = build(data, "openai", OPENAI, model="gpt-4o-mini", prompt_chars=400)
    u = turn.usage
    assert (
        u is not None and u.estimated and (u.input_tokens, u.output_tokens) == (100, 3)
    )
    p = prices("gpt-4o-mini", OPENAI, turn.created_at)
    c = turn.cost_details
    assert c is not None and c.estimated
    assert c.total_usd == pytest.approx(float(by_hand(p, inp=100, out=3)), rel=1e-12)
    line = readout_text(readout(turn))
    assert (
        f" · ~100 in · ~3 out tokens (estimated) · ~{format_usd(c.total_usd)} · "
        in line
    )


# -- several attempts, several steps ---------------------------------------------------------


def test_a_reply_that_fell_back_costs_every_attempt(server: LoopbackServer) -> None:
    """An OpenAI reply breaks mid-stream (no usage came: estimated) and Claude restarts
    it; the turn costs both, each at its own model's price, and says it is estimated."""
    broken = openai_chunks(["The report", " covers"], finish=None, done=False)
    err = {"error": {"message": "upstream overloaded", "type": "server_error"}}
    server.enqueue(Reply.events([*broken, json.dumps(err)]))
    with LoopbackServer() as other:
        usage = {"input_tokens": 40, "output_tokens": 12}
        other.enqueue(Reply.events(anthropic_chunks(["Fresh."], usage=usage)))
        fallback = Client(
            base_url=other.base_url,
            api_key="k",
            model="claude-haiku-4-5",
            api="anthropic",
        )
        client = Client(
            base_url=server.base_url,
            api_key="k",
            model="gpt-4o-mini",
            fallbacks=[fallback],
            recover="restart",
        )
        turn = client.chat("Write the report")
        client.close()
    a, b = turn.attempts
    assert turn.status == "complete" and a.status == "error" and b.status == "complete"
    assert a.usage is not None and a.usage.estimated and b.usage is not None
    first = by_hand(
        prices("gpt-4o-mini", None, turn.created_at),
        inp=cast(int, a.usage.input_tokens),
        out=cast(int, a.usage.output_tokens),
    )
    second = by_hand(prices("claude-haiku-4-5", None, turn.created_at), inp=40, out=12)
    c = turn.cost_details
    assert c is not None and c.estimated
    assert c.total_usd == pytest.approx(float(first + second), rel=1e-12)
    assert c.priced_as == ("openai:gpt-4o-mini", "anthropic:claude-haiku-4-5")
    # the turn's usage adds up the attempts too
    assert turn.usage is not None
    assert turn.usage.input_tokens == a.usage.input_tokens + 40


def _priced_turn(model: str, base_url: str, inp: int, out: int) -> Turn:
    turn = Turn(Request([{"role": "user", "content": "Hi"}], model, "openai", base_url))
    turn.status = "complete"
    turn.usage = Usage(input_tokens=inp, output_tokens=out, total_tokens=inp + out)
    return turn


def test_an_attempt_of_unknown_cost_makes_the_sum_unknown() -> None:
    turn = _priced_turn("gpt-4o-mini", OPENAI, 100, 10)
    known = Attempt(
        "gpt-4o-mini", "openai", OPENAI, status="complete", usage=turn.usage
    )
    local = Attempt(
        "llama3.2",
        "openai",
        "http://127.0.0.1:11434/v1",
        "fallback",
        "error",
        usage=Usage(input_tokens=100, output_tokens=3, estimated=True),
    )
    refused = Attempt(
        "gpt-4o",
        "openai",
        OPENAI,
        status="error",
        error=ErrorInfo("APIStatusError", "overloaded", status_code=529),
    )
    alone = price_usage(known.usage, ["gpt-4o-mini"], OPENAI, when=turn.created_at)
    assert alone is not None
    turn._attempts = [refused, known]  # refused: nothing billed
    assert turn.cost == alone.total_usd
    turn._attempts = [local, known]
    assert turn.cost is None


def test_a_tool_loop_costs_every_model_step_and_nothing_for_its_tools(
    server: LoopbackServer,
) -> None:
    """The model asks for a tool, gets its result, and answers: two requests, each
    priced; the readout's tokens and cost are the whole loop's, and each row of
    ``to_pandas()`` (one per model step) has its own step's cost."""

    def lookup(city: str) -> str:
        """Current temperature in a city."""
        return "21 C"

    server.enqueue(
        Reply.events(openai_call_chunks([Call("lookup", {"city": "Rome"})])),
        Reply.events(
            openai_chunks(
                ["Warm."], usage={"prompt_tokens": 45, "completion_tokens": 4}
            )
        ),
    )
    client = Client(base_url=server.base_url, api_key="k", model="gpt-4o-mini")
    turn = client.chat("Is it warm in Rome?", tools=[lookup])
    client.close()
    first, result, final = turn.steps
    assert isinstance(first, Turn) and isinstance(result, ToolResult) and final is turn
    p = prices("gpt-4o-mini", None, turn.created_at)
    one, two = by_hand(p, inp=20, out=10), by_hand(p, inp=45, out=4)  # toolkit's usage
    assert turn.cost == pytest.approx(float(one + two), rel=1e-12)
    r = readout(turn)
    assert (r["input_tokens"], r["output_tokens"]) == (65, 14)
    assert r["cost_usd"] == turn.cost
    df = Transcript([turn]).to_pandas()
    assert df["cost_usd"].tolist() == pytest.approx([float(one), float(two)], rel=1e-12)
    assert df["cost_usd"].sum() == pytest.approx(turn.cost)


# -- the readout -------------------------------------------------------------------------------


def _partial(name: str, events: int, **kw: Any) -> Turn:
    """A turn still streaming: the first ``events`` events of a recorded stream."""
    blocks = [b for b in (STREAMS / name).read_bytes().split(b"\n\n") if b.strip()]
    return build(
        b"\n\n".join(blocks[:events]) + b"\n\n", api_of(name), OPENAI, end="open", **kw
    )


def test_the_live_readout_shows_the_input_estimate_and_tokens_per_second() -> None:
    turn = _partial("openai_chat_text_usage.sse", 8, prompt_chars=120)
    assert turn.status == "streaming" and turn.usage is None
    r = readout(turn)
    m = turn.metrics
    assert m.input_estimate == 30 and m.tokens_per_s is not None
    assert r["input_tokens"] == 30 and r["output_tokens"] == m.deltas
    assert r["tokens_per_s"] == m.tokens_per_s
    line = readout_text(r)
    assert f" · ~30 in · ~{m.deltas} out tokens (estimated) · " in line
    assert f" · {m.tokens_per_s:.1f} tok/s" in line
    assert "$" not in line and "cost" not in line  # no cost until the reply ends


def test_a_placeholder_output_count_is_never_shown_as_real() -> None:
    # Anthropic's message_start has the real input count and a placeholder output
    # count (1): mid-stream, the input is real and the output is the deltas, marked
    name = "anthropic_thinking_signature.sse"
    turn = _partial(name, 6)
    assert turn.status == "streaming" and turn.usage is not None
    assert turn.usage.input_tokens == EXP[name]["usage"]["input_tokens"]
    line = readout_text(readout(turn))
    inp = EXP[name]["usage"]["input_tokens"]
    assert f" · {inp} in · ~{turn.metrics.deltas} out tokens (estimated)" in line
    assert f"~{inp} in" not in line


def test_python_and_js_readouts_read_alike() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    turns = [
        fixture("openai_chat_text_usage.sse", OPENAI),
        build(
            _with_cache((STREAMS / "anthropic_stop_sequence.sse").read_bytes()),
            "anthropic",
            ANTHROPIC,
        ),
        fixture("vllm_crusoe_llama33.sse", PROXY),
        build(
            sse(openai_chunks(["a", "b"])),
            "openai",
            OPENAI,
            model="gpt-4o-mini",
            prompt_chars=40,
        ),
        _partial("anthropic_thinking_signature.sse", 6),
        _partial("openai_chat_text_usage.sse", 8, prompt_chars=120),
    ]
    readouts = [readout(t) for t in turns]
    tr = Transcript(turns[:4])
    all_totals = [
        totals(tr),
        totals(Transcript(turns[:1])),
        totals(Transcript(turns[2:3])),
    ]
    usd = [0.0012, 0.00325, 0.05, 0.5, 1.234, 12.3, 5.7e-7, 0.0, 123456.789]
    script = (
        "import { readoutText, totalsText, fmtUsd } from './js/src/readout.js';"
        "const d = JSON.parse(process.argv[1]);"
        "console.log(JSON.stringify([d.r.map(readoutText), d.t.map(totalsText), d.u.map(fmtUsd)]));"
    )
    data = json.dumps({"r": readouts, "t": all_totals, "u": usd})
    out = subprocess.run(
        [node, "--input-type=module", "-e", script, data],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    js_r, js_t, js_u = json.loads(out)
    assert js_r == [readout_text(r) for r in readouts]
    assert js_t == [totals_text(t) for t in all_totals]
    assert js_u == [format_usd(x) for x in usd]
    assert "cost unknown" in js_r[2] and "written to cache" in js_r[1]


def test_dollars_read_as_people_write_them() -> None:
    assert [format_usd(x) for x in (0.0012, 0.05, 1.234, 0.00000057, 0)] == [
        "$0.0012",
        "$0.050",
        "$1.23",
        "$0.00000057",
        "$0.00",
    ]
    assert repr(Cost(0.001, 0.0002, 0.0012, estimated=True)) == "Cost(~$0.0012)"


# -- the DataFrame and the totals ---------------------------------------------------------


def test_to_pandas_has_cost_columns() -> None:
    known = fixture("openai_chat_text_usage.sse", OPENAI)
    cached = build(
        _with_cache((STREAMS / "anthropic_stop_sequence.sse").read_bytes()),
        "anthropic",
        ANTHROPIC,
    )
    estimated = build(
        sse(openai_chunks(["a"])),
        "openai",
        OPENAI,
        model="gpt-4o-mini",
        prompt_chars=40,
    )
    unknown = fixture("vllm_crusoe_llama33.sse", PROXY)
    df = Transcript([known, cached, estimated, unknown]).to_pandas()
    for col in ("cost_input_usd", "cost_output_usd", "cost_usd", "cost_estimated"):
        assert col in df.columns
    for i, t in enumerate([known, cached, estimated]):
        c = t.cost_details
        assert c is not None
        assert df["cost_usd"][i] == c.total_usd == t.cost
        assert df["cost_input_usd"][i] == c.input_usd
        assert df["cost_output_usd"][i] == c.output_usd
        assert bool(df["cost_estimated"][i]) == c.estimated
    assert df["cost_input_usd"][1] + df["cost_output_usd"][1] == pytest.approx(
        df["cost_usd"][1]
    )
    assert list(df["cost_estimated"][:3]) == [False, False, True]
    assert df["cached_input_tokens"][1] == CACHED["read"]
    assert df["cache_write_tokens"][1] == CACHED["write"]
    assert df["cost_usd"].isna().tolist() == [False, False, False, True]
    # summing the column is the conversation's known cost
    assert df["cost_usd"].sum() == pytest.approx(
        known.cost + cached.cost + estimated.cost
    )  # type: ignore[operator]


def test_the_widget_shows_conversation_totals_with_the_cost(
    server: LoopbackServer,
) -> None:
    usage = {"prompt_tokens": 1200, "completion_tokens": 80, "total_tokens": 1280}
    server.enqueue(
        Reply.events(openai_chunks(["Hello"], usage=usage)),
        Reply.events(openai_chunks(["Again"], usage=usage)),
    )
    client = Client(base_url=server.base_url, api_key="k", model="gpt-4o-mini")
    chat = ChatWidget(conversation=Conversation(client))

    async def two_turns() -> None:
        for q in ("Hi", "Once more"):
            await chat.send(q)
        await client.aclose()

    asyncio.run(two_turns())
    # the loopback server names its model "test-model"; the asked name is priced
    p = prices("gpt-4o-mini", None, chat.transcript[0].created_at)
    one = by_hand(p, inp=1200, out=80)
    t = chat.totals
    assert t["turns"] == 2 and t["cost_known"] == 2 and t["cost_unknown"] == 0
    assert t["cost_usd"] == pytest.approx(float(2 * one), rel=1e-9)
    assert (t["input_tokens"], t["output_tokens"]) == (2400, 160)
    text = totals_text(t)
    assert text.startswith(
        f"2 turns · 2400 in · 160 out tokens · {format_usd(float(2 * one))} · "
    )
    # each reply's readout in the panel has its own cost
    replies = [m for m in chat.messages if m["role"] == "assistant"]
    assert [r["readout"]["cost_usd"] for r in replies] == pytest.approx(
        [float(one)] * 2
    )


def test_totals_count_turns_of_unknown_cost_apart() -> None:
    known = fixture("openai_chat_text_usage.sse", OPENAI)
    unknown = fixture("vllm_crusoe_llama33.sse", PROXY)
    t = totals(Transcript([known, unknown]))
    assert (t["cost_known"], t["cost_unknown"]) == (1, 1)
    assert t["cost_usd"] == known.cost
    assert (
        f" · {format_usd(cast(float, known.cost))} + 1 turn of unknown cost · "
        in totals_text(t)
    )
    assert " · cost unknown · " in totals_text(totals(Transcript([unknown])))


def test_newer_prices_from_update_prices_are_used_once_in_place() -> None:
    """``genai_prices.UpdatePrices`` puts a newer snapshot in place: costs follow it
    (here a snapshot of one provider, with prices made up for the test)."""
    from genai_prices import data_snapshot
    from genai_prices.types import ClauseEquals, ModelInfo, ModelPrice, Provider

    usage = Usage(input_tokens=1000, output_tokens=100)
    before = price_usage(usage, ["gpt-4o-mini"], OPENAI, when=1.8e9)
    made_up = ModelPrice(input_mtok=Decimal("7"), output_mtok=Decimal("11"))
    provider = Provider(
        id="openai",
        name="OpenAI",
        api_pattern=r"https://api\.openai\.com",
        models=[
            ModelInfo(
                id="gpt-4o-mini", match=ClauseEquals("gpt-4o-mini"), prices=made_up
            )
        ],
    )
    data_snapshot.set_custom_snapshot(
        data_snapshot.DataSnapshot(providers=[provider], from_auto_update=True)
    )
    try:
        after = price_usage(usage, ["gpt-4o-mini"], OPENAI, when=1.8e9)
        assert after is not None
        assert after.total_usd == pytest.approx(
            float(by_hand(made_up, inp=1000, out=100))
        )
    finally:
        data_snapshot.set_custom_snapshot(None)
    assert price_usage(usage, ["gpt-4o-mini"], OPENAI, when=1.8e9) == before


def test_importing_nbstream_does_not_load_the_price_dataset() -> None:
    """genai-prices takes about half a second to load: only a cost asked for (or
    ``warm_up()``, at ``%load_ext`` and ``ChatWidget()``) loads it."""
    import subprocess
    import sys

    code = "import sys, nbstream, nbstream._notebook.render; print('genai_prices' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "False"
