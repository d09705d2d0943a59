"""``tools=`` and its companions (``tool_choice``, ``approve``, ``max_steps``), checked
when a question is asked, before anything is sent: ``ToolOptions``. And the default
approval outside a notebook front end, a question on the terminal.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._core.errors import ConfigurationError
from .._core.reply import ToolCall

if TYPE_CHECKING:
    from .._core.tools import Tool

__all__ = [
    "DEFAULT_MAX_STEPS",
    "Approve",
    "ToolOptions",
    "ask_in_terminal",
    "tool_options",
]

DEFAULT_MAX_STEPS = 8

Approve = Callable[[ToolCall], "bool | Awaitable[bool]"]


@dataclass(frozen=True)
class ToolOptions:
    """The tools of one question, and how the loop runs them."""

    tools: tuple[Tool, ...]
    tool_choice: str | None = None
    approve: Approve | None = None
    max_steps: int = DEFAULT_MAX_STEPS

    def specs(self) -> tuple[dict[str, Any], ...]:
        return tuple(t.spec() for t in self.tools)


def tool_options(
    tools: Any,
    tool_choice: Any,
    approve: Any,
    max_steps: Any,
    params: dict[str, Any],
) -> ToolOptions | None:
    """``tools=`` and its companions, checked now. Functions start a loop; tool
    descriptions already in a provider's own form (dicts) are sent as they are, in
    ``params``, and their calls come back in ``turn.tool_calls``, not run."""
    if tools is None or (isinstance(tools, list | tuple) and not tools):
        items: list[Any] = []
    elif isinstance(tools, list | tuple):
        items = list(tools)
    else:
        items = [tools]
    raw = [t for t in items if isinstance(t, dict)]
    if not items or raw:
        if raw and len(raw) != len(items):
            raise ConfigurationError(
                "tools=[…] mixes functions and tool descriptions (dicts): give "
                "functions (nbstream runs them) or descriptions in the provider's own "
                "form (sent as they are; the calls come back in turn.tool_calls)."
            )
        if approve or max_steps is not None:
            raise ConfigurationError(
                "approve= and max_steps= are for tools given as Python functions "
                "(tools=[fn]), which nbstream runs."
            )
        if raw:
            params["tools"] = raw
        if tool_choice is not None:
            params["tool_choice"] = tool_choice
        return None
    from .._core.tools import as_tools

    toolset = as_tools(items)
    names = [t.name for t in toolset]
    if tool_choice is not None and (
        not isinstance(tool_choice, str)
        or tool_choice not in ("auto", "required", "none", *names)
    ):
        raise ConfigurationError(
            f"tool_choice={tool_choice!r} is not a choice: use 'auto', 'required', "
            f"'none' or the name of a tool ({', '.join(names)})."
        )
    if max_steps is None:
        max_steps = DEFAULT_MAX_STEPS
    if type(max_steps) is not int or max_steps < 1:
        raise ConfigurationError(
            f"max_steps={max_steps!r} must be a whole number of model steps, at "
            "least 1 (e.g. max_steps=8)."
        )
    if approve is True:
        approver: Approve | None = ask_in_terminal
    elif approve is None or approve is False:
        approver = None
    elif callable(approve):
        approver = approve
    else:
        raise ConfigurationError(
            f"approve={approve!r} is not an approval: use True (ask before each call) "
            "or a function that takes the call and returns True to run it."
        )
    return ToolOptions(toolset, tool_choice, approver, max_steps)


_ask_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


async def ask_in_terminal(call: ToolCall) -> bool:
    """``approve=True`` outside a notebook front end: ask on the terminal, one call at
    a time."""
    loop = asyncio.get_running_loop()
    lock = _ask_locks.setdefault(loop, asyncio.Lock())  # a lock belongs to one loop
    async with lock:
        prompt = f"Run {call.name}({_args_text(call)})? [y/N] "
        from .toolloop import THREADS

        try:
            answer = await loop.run_in_executor(THREADS, input, prompt)
        except (EOFError, OSError, RuntimeError):
            return False  # nobody can answer: not approved
    return str(answer).strip().lower() in ("y", "yes")


def _args_text(call: ToolCall) -> str:
    if isinstance(call.input, dict):
        return ", ".join(f"{k}={v!r}" for k, v in call.input.items())
    return call.arguments
