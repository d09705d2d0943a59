"""Neutral stream events: what every provider's stream is turned into.

Each event is a small slotted dataclass with a ``type`` discriminator, so consumers can
``match`` on them. They carry deltas only; the accumulator builds the ``Turn``.

Events are values: to change one (a middleware does), make a new one
(``dataclasses.replace``); never change one in place. They are not frozen because a
frozen dataclass costs three times as much to build (0.6 µs against 0.2 µs here), and a
reply is one event per token.

>>> TextDelta("Hel").text
'Hel'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Strategy = Literal["first", "fallback", "restart", "prefill", "user_turn"]

__all__ = [
    "AttemptStart",
    "Done",
    "ErrorEvent",
    "Event",
    "Finish",
    "Meta",
    "ReasoningDelta",
    "RefusalDelta",
    "StepStart",
    "StreamWarning",
    "TextDelta",
    "ToolCallDelta",
    "ToolCallEnd",
    "ToolRun",
    "Usage",
    "UsageEvent",
]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one reply, normalised across providers.

    ``input_tokens`` counts every prompt token the provider processed, cached or not:
    ``cached_input_tokens`` of them were read from the provider's prompt cache and
    ``cache_write_tokens`` written to it (Anthropic, OpenRouter). ``output_tokens``
    counts every generated token, ``reasoning_tokens`` included. ``raw`` is the
    provider's own usage object. ``estimated`` is true when the server sent no usage
    and nbstream counted itself.
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    reasoning_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    estimated: bool = False
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(slots=True)
class TextDelta:
    """A piece of the reply's text."""

    text: str
    choice: int = 0
    type: Literal["text"] = "text"


@dataclass(slots=True)
class ReasoningDelta:
    """A piece of the model's reasoning (thinking) text."""

    text: str
    choice: int = 0
    type: Literal["reasoning"] = "reasoning"


@dataclass(slots=True)
class RefusalDelta:
    """A piece of a refusal (OpenAI's ``delta.refusal``)."""

    text: str
    choice: int = 0
    type: Literal["refusal"] = "refusal"


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of a tool call, keyed by ``index``; ``id`` and ``name`` may repeat."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    choice: int = 0
    type: Literal["tool_call"] = "tool_call"


@dataclass(slots=True)
class ToolCallEnd:
    """The tool call at ``index`` is complete (Anthropic ``content_block_stop``)."""

    index: int
    choice: int = 0
    type: Literal["tool_call_end"] = "tool_call_end"


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """The usage so far (providers send it cumulatively; the last one wins)."""

    usage: Usage
    type: Literal["usage"] = "usage"


@dataclass(slots=True)
class Finish:
    """The choice finished, with the provider's reason (``stop``, ``length`` …)."""

    reason: str
    choice: int = 0
    type: Literal["finish"] = "finish"


@dataclass(slots=True)
class ErrorEvent:
    """The provider reported an error inside the stream."""

    message: str
    code: str | None = None
    error_type: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)
    type: Literal["error"] = "error"


@dataclass(slots=True)
class Meta:
    """Anything else worth keeping on the turn: ids, model, logprobs, citations …

    ``mode`` says how it lands in ``turn.extra`` (or the choice's ``extra`` when
    ``choice`` is set): ``"set"`` replaces, ``"append"`` adds to a list.
    """

    key: str
    value: Any
    choice: int | None = None
    mode: Literal["set", "append"] = "set"
    type: Literal["meta"] = "meta"


@dataclass(slots=True)
class StreamWarning:
    """Something odd that did not stop the stream (a malformed chunk …)."""

    message: str
    type: Literal["warning"] = "warning"


@dataclass(slots=True)
class AttemptStart:
    """Another attempt takes over the reply (fallback or recovery).

    ``reason`` says why the previous one ended ("the connection dropped at 1,204
    characters"); ``kept`` is how many characters of the reply stay; with
    ``superseded`` (a restart) the text so far is replaced by what follows.
    """

    index: int
    model: str
    base_url: str
    strategy: Strategy
    reason: str
    kept: int = 0
    superseded: bool = False
    type: Literal["attempt"] = "attempt"

    @property
    def note(self) -> str | None:
        """``the connection dropped at 1,204 characters; continued by llama3``"""
        from .recovery import takeover

        return takeover(self.strategy, self.reason, self.model)


@dataclass(slots=True)
class ToolRun:
    """A tool call of the loop changed state (``tools=[…]``): ``"approval"`` (waiting
    for someone to approve it), ``"running"``, or how it ended (``"complete"``,
    ``"error"``, ``"denied"``, ``"cancelled"``, ``"background"``, ``"skipped"``; see
    ``ToolResult``). ``result`` is the text sent back to the model, once it ended."""

    call_id: str
    name: str
    arguments: str
    status: str
    result: str | None = None
    is_error: bool = False
    elapsed_s: float | None = None
    step: int = 0  # the model step that asked for it (0: the first)
    type: Literal["tool_run"] = "tool_run"


@dataclass(slots=True)
class StepStart:
    """The tool loop asks the model again (step 1, 2 …), with the results so far: from
    here, ``turn.text`` and ``turn.tool_calls`` are this step's."""

    step: int
    type: Literal["step"] = "step"


@dataclass(slots=True)
class Done:
    """The stream said it is over (``[DONE]`` or ``message_stop``)."""

    type: Literal["done"] = "done"


Event = (
    TextDelta
    | ReasoningDelta
    | RefusalDelta
    | ToolCallDelta
    | ToolCallEnd
    | UsageEvent
    | Finish
    | ErrorEvent
    | Meta
    | StreamWarning
    | AttemptStart
    | ToolRun
    | StepStart
    | Done
)
