"""The record: ``Turn`` (one request and its reply) and ``Transcript`` (a conversation).

Plain data, no I/O but ``save``/``load``. A turn is always current: while it streams,
``turn.text`` is the text so far. Stopped and failed turns are kept, partial text included.

>>> t = Transcript()
>>> len(t), t.to_messages()
(0, [])
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import time
import uuid
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

from .events import Usage

if TYPE_CHECKING:
    import pandas

__all__ = [
    "Api",
    "Choice",
    "ErrorInfo",
    "Metrics",
    "Request",
    "Status",
    "ToolCall",
    "Transcript",
    "Turn",
]

Status = Literal["streaming", "complete", "cancelled", "error", "incomplete"]
Api = Literal["openai", "anthropic"]
FORMAT_VERSION = 1
_SURROGATE = re.compile("[\ud800-\udfff]")


class TextBuffer:
    """Appends in O(1); joins once per read, and compacts so memory stays ~ the text."""

    __slots__ = ("_blocks", "_cache", "_parts")

    _COMPACT_AT = 512

    def __init__(self, text: str = "") -> None:
        self._blocks: list[str] = [text] if text else []
        self._parts: list[str] = []
        self._cache: str | None = text

    def append(self, piece: str) -> None:
        parts = self._parts
        parts.append(piece)
        self._cache = None
        if len(parts) >= self._COMPACT_AT:
            self._blocks.append("".join(parts))
            parts.clear()

    @property
    def value(self) -> str:
        if self._cache is None:
            if self._parts:
                self._blocks.append("".join(self._parts))
                self._parts.clear()
            # one join, and the result replaces the blocks: the text is held once
            text = "".join(self._blocks)
            if _SURROGATE.search(text):  # an emoji's UTF-16 halves in two chunks
                b = text.encode("utf-16-le", "surrogatepass")
                text = b.decode("utf-16-le", "surrogatepass")
            self._blocks = [text] if text else []
            self._cache = text
        return self._cache

    def __bool__(self) -> bool:
        return bool(self._blocks or self._parts)


@dataclass(eq=False)
class ToolCall:
    """A tool call the model asked for. ``arguments`` is the JSON text as streamed;
    ``input`` is it parsed (once, when the call ended), or ``None`` if it is not valid
    JSON, in which case ``error`` says why (e.g. cut off by ``max_tokens``)."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""
    input: Any = None
    error: str | None = None
    complete: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "id": self.id,
            "name": self.name,
            "arguments": self.arguments,
            "input": self.input,
            "error": self.error,
            "complete": self.complete,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToolCall:
        return cls(**d)


class Choice:
    """One of the ``n`` replies of a turn (almost always just one)."""

    __slots__ = (
        "_args",
        "_reasoning",
        "_refusal",
        "_text",
        "extra",
        "finish_reason",
        "index",
        "tool_calls_by_index",
    )

    def __init__(self, index: int = 0) -> None:
        self.index = index
        self._text = TextBuffer()
        self._reasoning = TextBuffer()
        self._refusal: TextBuffer | None = None
        self.finish_reason: str | None = None
        self.tool_calls_by_index: dict[int, ToolCall] = {}
        self._args: dict[int, list[str]] = {}
        self.extra: dict[str, Any] = {}

    @property
    def text(self) -> str:
        return self._text.value

    @property
    def reasoning(self) -> str:
        return self._reasoning.value

    @property
    def refusal(self) -> str | None:
        return self._refusal.value if self._refusal is not None else None

    @property
    def tool_calls(self) -> list[ToolCall]:
        calls = sorted(self.tool_calls_by_index.values(), key=lambda c: c.index)
        for c in calls:
            parts = self._args.get(c.index)
            if parts:
                c.arguments = "".join(parts)
        return calls

    # -- mutation, used by the accumulator -------------------------------------
    def add_text(self, s: str) -> None:
        self._text.append(s)

    def add_reasoning(self, s: str) -> None:
        self._reasoning.append(s)

    def add_refusal(self, s: str) -> None:
        if self._refusal is None:
            self._refusal = TextBuffer()
        self._refusal.append(s)

    def add_tool_delta(
        self, index: int, id: str | None, name: str | None, args: str
    ) -> None:
        call = self.tool_calls_by_index.get(index)
        if call is None:
            call = self.tool_calls_by_index[index] = ToolCall(index)
            self._args[index] = []
        # id and name: the first non-empty value wins; a provider that re-sends them
        # must not get "llm_versionllm_version".
        if id and not call.id:
            call.id = id
        if name and not call.name:
            call.name = name
        if args:
            self._args[index].append(args)

    def end_tool_call(self, index: int) -> None:
        call = self.tool_calls_by_index.get(index)
        if call is None or call.complete or call.error:
            return
        args = "".join(self._args.get(index, ())) or "{}"  # no input means no arguments
        call.arguments = args
        self._args[index] = [args]
        try:
            call.input = json.loads(args)
        except ValueError as exc:
            call.input = None
            call.error = f"the arguments are not valid JSON ({exc})"
        else:
            call.error = None
            call.complete = True

    def end_all_tool_calls(self) -> None:
        for index in list(self.tool_calls_by_index):
            self.end_tool_call(index)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "text": self.text,
            "reasoning": self.reasoning,
            "refusal": self.refusal,
            "finish_reason": self.finish_reason,
            "tool_calls": [c.to_dict() for c in self.tool_calls],
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Choice:
        c = cls(d["index"])
        c._text = TextBuffer(d["text"])
        c._reasoning = TextBuffer(d["reasoning"])
        if d["refusal"] is not None:
            c._refusal = TextBuffer(d["refusal"])
        c.finish_reason = d["finish_reason"]
        for tc in d["tool_calls"]:
            call = ToolCall.from_dict(tc)
            c.tool_calls_by_index[call.index] = call
            c._args[call.index] = [call.arguments] if call.arguments else []
        c.extra = d["extra"]
        return c


@dataclass(eq=False)
class Metrics:
    """Timing of one turn, in seconds from the moment the request was sent.

    ``arrivals`` holds the arrival time of every content delta (float32, 4 bytes each),
    compact enough to keep for a timeline plot of a 100k-token reply.
    """

    ttfb_s: float | None = None
    ttft_s: float | None = None
    elapsed_s: float | None = None
    chunks: int = 0
    deltas: int = 0
    attempts: int = 0
    output_tokens: int | None = None
    output_tokens_estimated: bool = True
    arrivals: array[float] = field(default_factory=lambda: array("f"))

    @property
    def tokens_per_s(self) -> float | None:
        """Output tokens per second of generation (after the first token)."""
        if self.output_tokens is None or self.ttft_s is None or self.elapsed_s is None:
            return None
        gen = self.elapsed_s - self.ttft_s
        if gen <= 0 or self.output_tokens < 2:
            return None
        return (self.output_tokens - 1) / gen

    def to_dict(self) -> dict[str, Any]:
        return {
            "ttfb_s": self.ttfb_s,
            "ttft_s": self.ttft_s,
            "elapsed_s": self.elapsed_s,
            "chunks": self.chunks,
            "deltas": self.deltas,
            "attempts": self.attempts,
            "output_tokens": self.output_tokens,
            "output_tokens_estimated": self.output_tokens_estimated,
            "arrivals": self.arrivals.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Metrics:
        d = dict(d)
        arrivals = array("f", d.pop("arrivals"))
        return cls(**d, arrivals=arrivals)


@dataclass(eq=False)
class ErrorInfo:
    """Why a turn failed: the error's class name, message, and HTTP facts if any."""

    kind: str
    message: str
    status_code: int | None = None
    request_id: str | None = None
    retry_after: float | None = None
    code: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ErrorInfo:
        return cls(**d)


@dataclass(eq=False)
class Request:
    """What was asked: the new messages of this turn and the parameters (never a key).

    In a ``Conversation`` the history sent with it is the transcript's earlier turns.
    """

    messages: list[dict[str, Any]]
    model: str
    api: Api
    base_url: str
    params: dict[str, Any] = field(default_factory=dict)
    system: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Request:
        return cls(**d)


def _usage_to_dict(u: Usage | None) -> dict[str, Any] | None:
    if u is None:
        return None
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
        "reasoning_tokens": u.reasoning_tokens,
        "cached_input_tokens": u.cached_input_tokens,
        "estimated": u.estimated,
        "raw": u.raw,
    }


class Turn:
    """One request and its reply, current while it streams.

    >>> turn = Turn(Request([{"role": "user", "content": "Hi"}], "m", "openai", "u"))
    >>> turn.status, turn.text
    ('streaming', '')
    """

    def __init__(self, request: Request) -> None:
        self.id = uuid.uuid4().hex
        self.created_at = time.time()
        self.request = request
        self.status: Status = "streaming"
        self.choices: list[Choice] = [Choice(0)]
        self.usage: Usage | None = None
        self.error: ErrorInfo | None = None
        self.metrics = Metrics()
        self.model: str | None = None
        self.response_id: str | None = None
        self.extra: dict[str, Any] = {}
        self.warnings: list[str] = []
        self.done = False  # the stream said it is over ([DONE] / message_stop)
        # Every server-sent event as received, only with Client(keep_raw_events=True):
        # for debugging a provider's stream. Not saved with the transcript.
        self.raw_events: list[Any] | None = None

    def choice(self, index: int) -> Choice:
        choices = self.choices
        if index < len(choices):
            return choices[index]
        while len(choices) <= index:
            choices.append(Choice(len(choices)))
        return choices[index]

    @property
    def text(self) -> str:
        return self.choices[0].text

    @property
    def reasoning(self) -> str:
        return self.choices[0].reasoning

    @property
    def refusal(self) -> str | None:
        return self.choices[0].refusal

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self.choices[0].tool_calls

    @property
    def finish_reason(self) -> str | None:
        return self.choices[0].finish_reason

    @property
    def provider(self) -> str:
        return self.request.api

    def __repr__(self) -> str:
        text = self.text
        short = text if len(text) <= 60 else text[:57] + "..."
        return (
            f"<Turn {self.status} model={self.model or self.request.model!r} "
            f"finish={self.finish_reason!r} text={short!r}>"
        )

    # -- history --------------------------------------------------------------
    def reply_message(self, api: Api) -> dict[str, Any] | None:
        """The assistant message of choice 0, in ``api``'s format (None if empty)."""
        ch = self.choices[0]
        # a refusal is the reply: without it the refused question looks unanswered
        text, calls = ch.text or ch.refusal or "", ch.tool_calls
        if api == "openai":
            if not text and not calls:
                return None
            msg: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                msg["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments or "{}"},
                    }
                    for c in calls
                ]
            return msg
        blocks: list[dict[str, Any]] = []
        sig = ch.extra.get("reasoning_signature")
        if ch.reasoning and sig:
            blocks.append(
                {"type": "thinking", "thinking": ch.reasoning, "signature": sig}
            )
        blocks.extend(
            b for b in ch.extra.get("blocks", []) if b["type"] == "redacted_thinking"
        )
        if text:
            blocks.append({"type": "text", "text": text})
        for c in calls:
            blocks.append(
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.input or {}}
            )
        if not blocks:
            return None
        if len(blocks) == 1 and blocks[0]["type"] == "text":
            return {"role": "assistant", "content": text}
        return {"role": "assistant", "content": blocks}

    # -- serialisation --------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at,
            "request": self.request.to_dict(),
            "status": self.status,
            "choices": [c.to_dict() for c in self.choices],
            "usage": _usage_to_dict(self.usage),
            "error": self.error.to_dict() if self.error else None,
            "metrics": self.metrics.to_dict(),
            "model": self.model,
            "response_id": self.response_id,
            "extra": self.extra,
            "warnings": self.warnings,
            "done": self.done,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Turn:
        turn = cls(Request.from_dict(d["request"]))
        turn.id = d["id"]
        turn.created_at = d["created_at"]
        turn.status = d["status"]
        turn.choices = [Choice.from_dict(c) for c in d["choices"]]
        turn.usage = Usage(**d["usage"]) if d["usage"] is not None else None
        turn.error = ErrorInfo.from_dict(d["error"]) if d["error"] else None
        turn.metrics = Metrics.from_dict(d["metrics"])
        turn.model = d["model"]
        turn.response_id = d["response_id"]
        turn.extra = d["extra"]
        turn.warnings = d["warnings"]
        turn.done = d["done"]
        return turn

    def to_row(self) -> dict[str, Any]:
        """A flat row for a DataFrame."""
        u, m = self.usage, self.metrics
        prompt = (
            self.request.messages[-1].get("content") if self.request.messages else None
        )
        return {
            "turn_id": self.id,
            "created_at": self.created_at,
            "status": self.status,
            "api": self.request.api,
            "model": self.model or self.request.model,
            "prompt": prompt if isinstance(prompt, str) else json.dumps(prompt),
            "text": self.text,
            "reasoning": self.reasoning,
            "tool_calls": len(self.tool_calls),
            "finish_reason": self.finish_reason,
            "input_tokens": u.input_tokens if u else None,
            "output_tokens": u.output_tokens if u else None,
            "total_tokens": u.total_tokens if u else None,
            "usage_estimated": u.estimated if u else None,
            "ttfb_s": m.ttfb_s,
            "ttft_s": m.ttft_s,
            "elapsed_s": m.elapsed_s,
            "tokens_per_s": m.tokens_per_s,
            "chunks": m.chunks,
            "attempts": m.attempts,
            "error": self.error.message if self.error else None,
        }


class Transcript:
    """The turns of a conversation, every one kept: finished, stopped or failed.

    >>> tr = Transcript()
    >>> tr.to_json()[:31]
    '{"format": "nbstream.transcript'
    """

    def __init__(
        self, turns: list[Turn] | None = None, *, system: str | None = None
    ) -> None:
        self.turns: list[Turn] = list(turns or [])
        self.system = system

    def append(self, turn: Turn) -> None:
        self.turns.append(turn)

    def clear(self) -> None:
        self.turns.clear()

    def __len__(self) -> int:
        return len(self.turns)

    def __iter__(self) -> Iterator[Turn]:
        return iter(self.turns)

    def __getitem__(self, i: int) -> Turn:
        return self.turns[i]

    def __repr__(self) -> str:
        by: dict[str, int] = {}
        for t in self.turns:
            by[t.status] = by.get(t.status, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in by.items())
        return (
            f"<Transcript {len(self.turns)} turns{': ' + summary if summary else ''}>"
        )

    def to_messages(
        self, api: Api = "openai", *, include_system: bool = True
    ) -> list[dict[str, Any]]:
        """The history to send next, in ``api``'s format.

        Failed turns (``status == "error"``) are left out entirely, so a retried question
        is not sent twice; stopped and incomplete turns go in with their partial reply.
        For ``api="openai"`` the system prompt is the first message; Anthropic takes it
        as a separate parameter, so it is left out there.
        """
        out: list[dict[str, Any]] = []
        if include_system and self.system and api == "openai":
            out.append({"role": "system", "content": self.system})
        for turn in self.turns:
            if turn.status == "error" or turn.status == "streaming":
                continue
            out.extend(turn.request.messages)
            reply = turn.reply_message(api)
            if reply is not None:
                out.append(reply)
        return copy.deepcopy(out)  # editing the history must not edit the record

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "nbstream.transcript",
            "version": FORMAT_VERSION,
            "system": self.system,
            "turns": [t.to_dict() for t in self.turns],
        }

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Transcript:
        if not isinstance(d, dict) or d.get("format") != "nbstream.transcript":
            raise ValueError(
                "not an nbstream transcript (no 'format': 'nbstream.transcript')"
            )
        if d.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"transcript format version {d.get('version')!r} is not supported by this "
                f"nbstream (it reads version {FORMAT_VERSION}); upgrade nbstream"
            )
        return cls([Turn.from_dict(t) for t in d["turns"]], system=d.get("system"))

    @classmethod
    def from_json(cls, text: str) -> Transcript:
        return cls.from_dict(cast(dict[str, Any], json.loads(text)))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the transcript as JSON (atomically: a crash leaves the old file)."""
        try:  # serialise before any file is touched
            data = self.to_json(indent=1).encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates (a pair split across chunks):
            data = json.dumps(self.to_dict(), indent=1).encode()  # \u escapes keep them
        tmp = f"{os.fspath(path)}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Transcript:
        with open(path, encoding="utf-8") as f:
            return cls.from_json(f.read())

    def to_pandas(self) -> pandas.DataFrame:
        """One row per turn: status, tokens, latency, tokens/s, text …"""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "Transcript.to_pandas() needs pandas, which is not installed. "
                'Install it with: pip install "nbstream[pandas]"  (or: pip install pandas)'
            ) from None
        return pd.DataFrame([t.to_row() for t in self.turns])
