"""Helpers for ``tests/test_batch_*.py`` (not a test module): a scripted model server
that answers many requests with chosen faults and keeps count, and window counters.

``ScriptedModel`` is served by ``LoopbackServer.serve``. It answers ``echo: <prompt>``
(the last user message) as an OpenAI stream, unless ``plan(prompt, attempt)`` names a
fault for that attempt. It logs every attempt with its arrival time, so a test can count
requests (and tokens) in any window, as a provider's rate limiter does.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from tests.clientkit import reply_from_error_fixture
from tests.loopback import DROP, Gate, Reply, Seen, openai_chunks

KEY = "sk-test-BATCHSECRET-0123456789abcdef"

# fault name -> what the server does on that attempt
FAULTS = (
    "429-ms",  # 429 with retry-after-ms (OpenAI sends it) and x-ratelimit-* headers
    "429-bare",  # a real 429 body with no retry-after at all (OpenRouter)
    "500",
    "503",  # with retry-after: 0
    "529",  # overloaded
    "drop",  # the connection breaks after two events
    "cut",  # the stream ends with no finish reason and no [DONE]
    "slow",  # 10 ms between events
    "hang",  # three events, then nothing until ``model.gate`` opens (bounded: 30 s)
    "400",  # a real 400 body (OpenAI, unsupported value)
    "401",
    "404",  # a real 404 body (Anthropic, model not found)
)

Plan = Callable[[str, int], str | None]


@dataclass(frozen=True)
class Attempt:
    prompt: str
    n: int  # 1 for the first attempt of this prompt
    at: float  # when the server received it (time.monotonic)
    fault: str | None
    tokens: int  # prompt + completion tokens the server counts for it


def prompt_of(seen: Seen) -> str:
    body = json.loads(seen.body)
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else json.dumps(content)


def answer(prompt: str) -> str:
    return f"echo: {prompt}"


def pieces(prompt: str) -> list[str]:
    return ["echo: ", *[prompt[i : i + 3] for i in range(0, len(prompt), 3)]]


class ScriptedModel:
    """A model server script: ``server.serve(ScriptedModel(plan))``."""

    def __init__(
        self,
        plan: Plan | None = None,
        *,
        delay: float = 0.0,
        headers: Callable[[str, int], dict[str, str]] | None = None,
        echo_key: bool = False,
    ) -> None:
        self.plan = plan or (lambda prompt, n: None)
        self.delay = delay
        self.headers = headers
        self.echo_key = echo_key
        self.gate = Gate()
        self.lock = threading.Lock()
        self.attempts: Counter[str] = Counter()
        self.completed: Counter[str] = Counter()  # whole replies sent
        self.log: list[Attempt] = []

    def __call__(self, seen: Seen) -> Reply:
        prompt = prompt_of(seen)
        body = json.loads(seen.body)
        with self.lock:
            self.attempts[prompt] += 1
            n = self.attempts[prompt]
        fault = self.plan(prompt, n)
        prompt_tokens = len(prompt) // 4 + 1
        completion = len(pieces(prompt))
        limit = body.get("max_tokens")
        if isinstance(limit, int):
            completion = min(completion, limit)
        with self.lock:
            self.log.append(
                Attempt(prompt, n, seen.received_at, fault, prompt_tokens + completion)
            )
            if fault in (None, "slow"):
                self.completed[prompt] += 1
        reply = self._reply(prompt, fault, prompt_tokens, completion, seen)
        if self.headers is not None:
            reply.headers.update(self.headers(prompt, n))
        return reply

    def _reply(
        self, prompt: str, fault: str | None, ptok: int, ctok: int, seen: Seen
    ) -> Reply:
        usage = {
            "prompt_tokens": ptok,
            "completion_tokens": ctok,
            "total_tokens": ptok + ctok,
        }
        words = pieces(prompt)[:ctok]
        if self.echo_key:  # a server that echoes the key it was sent everywhere
            auth = seen.headers.get("authorization", "")
            words = [*words, f" (you sent {auth})"]
        match fault:
            case None:
                return Reply.events(openai_chunks(words, usage=usage), delay=self.delay)
            case "slow":
                return Reply.events(openai_chunks(words, usage=usage), delay=0.01)
            case "429-ms":
                return Reply.json(
                    429,
                    {"error": {"message": "Rate limit reached for requests"}},
                    {
                        "retry-after-ms": "20",
                        "x-ratelimit-remaining-requests": "0",
                        "x-ratelimit-reset-requests": "20ms",
                    },
                )
            case "429-bare":
                return reply_from_error_fixture(
                    "openrouter_429_upstream_rate_limited.json"
                )
            case "500" | "529":
                return Reply.json(
                    int(fault), {"error": {"message": "the server failed"}}
                )
            case "503":
                return Reply.json(
                    503, {"error": {"message": "unavailable"}}, {"retry-after": "0"}
                )
            case "drop":
                reply = Reply.events(openai_chunks(words, usage=usage))
                reply.chunks = [*reply.chunks[:2], DROP]
                return reply
            case "hang":
                reply = Reply.events(openai_chunks(words, usage=usage))
                reply.chunks = [*reply.chunks[:3], self.gate, *reply.chunks[3:]]
                return reply
            case "cut":
                return Reply.events(openai_chunks(words, finish=None, done=False))
            case "400":
                return reply_from_error_fixture("openai_400_unsupported_value.json")
            case "401":
                auth = seen.headers.get("authorization", "")
                return Reply.json(
                    401,
                    {"error": {"message": f"Incorrect API key provided: {auth}"}},
                    {"x-request-id": auth},
                )
            case "404":
                return reply_from_error_fixture("anthropic_404_not_found.json")
        raise AssertionError(f"unknown fault {fault!r}")

    # -- what the server saw --------------------------------------------------------
    def times(self) -> list[float]:
        with self.lock:
            return sorted(a.at for a in self.log)

    def prompts_sent(self) -> Counter[str]:
        with self.lock:
            return Counter(a.prompt for a in self.log)


def max_in_window(times: list[float], window: float) -> int:
    """The most events in any half-open window ``[t, t + window)``."""
    best = j = 0
    for i in range(len(times)):
        while j < len(times) and times[j] < times[i] + window:
            j += 1
        best = max(best, j - i)
    return best


def max_sum_in_window(points: list[tuple[float, float]], window: float) -> float:
    """The largest sum of values in any window ``[t, t + window)``."""
    pts = sorted(points)
    best = total = 0.0
    j = 0
    for i in range(len(pts)):
        while j < len(pts) and pts[j][0] < pts[i][0] + window:
            total += pts[j][1]
            j += 1
        best = max(best, total)
        total -= pts[i][1]
    return best


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def any_slice_of(secret: str, data: bytes, n: int = 8) -> str | None:
    """The first ``n``-character slice of ``secret`` found in ``data``, if any."""
    for i in range(len(secret) - n + 1):
        if secret[i : i + n].encode() in data:
            return secret[i : i + n]
    return None


def by_index(faults: dict[int, list[str | None]], modulo: int) -> Plan:
    """A plan for prompts ``q<i>``: ``faults[i % modulo][attempt - 1]`` (None: answer)."""

    def plan(prompt: str, n: int) -> str | None:
        i = int(prompt[1:]) if prompt[1:].isdigit() else -1
        script = faults.get(i % modulo, [])
        return script[n - 1] if n <= len(script) else None

    return plan
