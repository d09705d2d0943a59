"""When a reply breaks: whether another attempt can help, what to send it, and how to
join what it writes to what was already there. Pure: no I/O, no clock.

>>> decide("APIConnectionError", None, had_output=True, recover="prefill", more=True)
Decision(go=True, strategy='prefill', why='')
>>> s = Stitcher("The quick brown fox jumps ov")
>>> s.feed("brown fox jumps over the lazy dog.") + s.flush()
'er the lazy dog.'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from .events import Strategy

__all__ = [
    "CONTINUE_PROMPT",
    "MIN_OVERLAP",
    "Decision",
    "Recover",
    "Stitcher",
    "continuation",
    "decide",
    "describe_break",
    "rejects_prefill",
    "takeover",
]

Recover = Literal["restart", "prefill", "user_turn"]
MIN_OVERLAP = 12  # a continuation that restates at least this much is trimmed
HOLD = 240  # characters of a continuation held back until its overlap is known
CONTINUE_PROMPT = (
    "Your previous reply was cut off. Continue it exactly where it stopped: do not "
    "repeat anything, do not comment, start with the next character."
)
# Statuses that another attempt may cure (the same set the client retries).
_TRANSIENT = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True)
class Decision:
    go: bool  # try the next entry
    strategy: Strategy = "fallback"
    why: str = ""  # when not: why not, for the error message


def decide(
    kind: str,
    status: int | None,
    *,
    had_output: bool,
    recover: Recover | None,
    more: bool,
    phase: str | None = None,
) -> Decision:
    """After attempt failed with error class ``kind`` (HTTP ``status`` if any): go on?"""
    if kind == "InternalError":
        return Decision(False, why="nbstream itself failed (a bug), not the model")
    if kind == "APITimeoutError" and phase == "total":
        return Decision(False, why="the total time allowed for the reply ran out")
    if status is not None and 400 <= status < 500 and status not in _TRANSIENT:
        return Decision(
            False,
            why=f"HTTP {status} is about the request itself (its key, model or "
            "content), which another attempt would not cure",
        )
    if not more:
        return Decision(False, why="no fallback was left to try")
    if not had_output:
        return Decision(True, "fallback")
    if recover is None:
        return Decision(
            False,
            why="the reply had started and recover= is not set (restart, prefill "
            "or user_turn would continue it)",
        )
    return Decision(True, recover)


def describe_break(
    kind: str, phase: str | None, chars: int, *, incomplete: bool
) -> str:
    """``the connection dropped at 1,204 characters``."""
    at = f"at {chars:,} characters" if chars else "before the first token"
    if incomplete:
        return f"the stream ended without finishing {at}"
    what = {
        "APIConnectionError": "the connection dropped",
        "ProviderStreamError": "the provider sent an error",
        "APIStatusError": "the server refused",
        "NotAStreamError": "the server did not stream",
    }.get(kind)
    if kind == "APITimeoutError":
        what = "the server went quiet" if phase == "idle" else "the server timed out"
    return f"{what or kind} {at}"


def takeover(strategy: str, reason: str | None, model: str) -> str | None:
    """How an attempt took over, in words (``None`` for the first one)::

    the connection dropped at 1,204 characters; continued by llama3
    """
    if strategy == "first" or not reason:
        return None
    if strategy == "restart":
        return f"{reason}; {model} answered again from the start"
    if strategy == "fallback":
        return f"{reason}; {model} answered instead"
    return f"{reason}; continued by {model}"


def rejects_prefill(status: int, message: str) -> bool:
    """A 4xx that names the trailing assistant message (the server refuses to continue
    one): asked again as a user turn."""
    if not 400 <= status < 500 or status in _TRANSIENT:
        return False
    m = message.lower()
    return (
        "assistant" in m
        or "prefill" in m
        or re.search(r"(final|last) message", m) is not None
    )


def continuation(
    strategy: Strategy,
    messages: list[dict[str, Any]],
    partial: str,
    *,
    anthropic: bool,
    extra: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The messages (and extra parameters) that ask for the rest of ``partial``."""
    if strategy in ("first", "fallback", "restart") or not partial:
        return list(messages), {}
    # Anthropic refuses a final assistant message that ends in whitespace
    said = partial.rstrip() if anthropic else partial
    out = [*messages, {"role": "assistant", "content": said}]
    if strategy == "user_turn":
        out.append({"role": "user", "content": CONTINUE_PROMPT})
        return out, {}
    return out, dict(extra or {})


class Stitcher:
    """Joins a continuation to the reply it continues, dropping what the continuation
    restates:

    - the last words again: the longest overlap of at least ``MIN_OVERLAP`` characters
      between the end of the reply and the start of the continuation;
    - the reply's unfinished last word again (a model asked to continue "named Lun"
      often starts its message with "Lun, …"), when it is at least 3 characters;
    - the whole reply again, word for word (a model that starts over): dropped once the
      continuation has gone past it.

    And where a model starts a new sentence instead of finishing the last one ("…on
    the" + "Luna was …"), a space keeps the two words apart.

    What is held back while this is decided (at most ``HOLD`` characters, or the
    length of the reply while the continuation repeats it) is released as soon as it
    is known, so the live view never has to take text back.
    """

    __slots__ = ("_before", "_buf", "_done")

    def __init__(self, before: str) -> None:
        self._before = before
        self._buf: list[str] = []
        self._done = False

    def feed(self, text: str) -> str:
        if self._done:
            return text
        self._buf.append(text)
        head = "".join(self._buf)
        before = self._before
        if len(before) >= MIN_OVERLAP:
            if before.startswith(head) and len(head) < len(before):
                return ""  # so far it repeats the reply from its start: wait
            if head.startswith(before):  # it repeated the whole reply: drop that
                self._done = True
                self._buf.clear()
                return head[len(before) :]
        if len(head) < HOLD:
            return ""
        return self.flush()

    def flush(self) -> str:
        if self._done:
            return ""
        self._done = True
        head = "".join(self._buf)
        self._buf.clear()
        return _trim(self._before, head)


_WORD_END = re.compile(r"\w{3,40}$")


def _trim(before: str, head: str) -> str:
    tail = before[-HOLD:]
    if tail.endswith((" ", "\t")) and head.startswith(" "):
        head = head[1:]  # the separator is there already
    for k in range(min(len(tail), len(head)), MIN_OVERLAP - 1, -1):
        if tail.endswith(head[:k]):
            return head[k:]
    word = _WORD_END.search(tail)
    if word is not None:
        w = word.group()
        for lead in (w, " " + w):
            if head.startswith(lead) and not head[len(lead) : len(lead) + 1].isalnum():
                return head[len(lead) :]
    if (tail[-1:].islower() or tail[-1:] in (",", ".", ";", ":", "!", "?")) and head[
        :1
    ].isupper():
        # a model that does not continue mid-sentence starts a new one ("…on the" +
        # "Luna was …", "…extinguished," + "The sun …"): keep the words apart
        return " " + head
    return head
