"""A ``%%chat`` line and cell, read: the options (checked, each wrong one a UsageError
with its fix), the notebook's functions for ``--tools``, its variables for ``--with``,
its model or schema for ``--schema``, ``{name}`` filled for ``-i``, and what is then
sent (``CellRequest``)."""

from __future__ import annotations

import shlex
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from IPython.core.error import UsageError

from .._core.context import Named, as_messages
from .._core.errors import ConfigurationError
from .._core.response_format import normalise
from .._http.client import Client, Messages
from .._http.conversation import Conversation
from .toolblocks import Approvals

__all__ = [
    "CellRequest",
    "Options",
    "check_options",
    "interpolate",
    "parse_line",
    "schema_from",
    "tools_from",
    "with_variables",
]


@dataclass
class Options:
    model: str | None
    api: str | None
    base_url: str | None
    system: str | None
    temperature: float | None
    max_tokens: int | None
    timeout: float | None
    conversation: str | None
    output: str | None
    interpolate: bool
    new: bool
    background: bool
    record: str | None
    replay: str | None
    recover: str | None
    tools: str | None
    approve: bool
    max_steps: int | None
    tool_choice: str | None
    with_names: str | None
    schema: str | None


@dataclass
class CellRequest:
    conv: Conversation
    message: Messages
    params: dict[str, Any]
    output: str | None
    background: bool
    approve: bool = False

    def stream_params(self, approvals: Approvals | None) -> dict[str, Any]:
        """The parameters to send with; ``approve``: the live view's buttons when
        there is one, else the terminal."""
        if not self.approve:
            return self.params
        return {**self.params, "approve": approvals.ask if approvals else True}


class _Namespace(dict[str, Any]):
    """The user namespace for ``str.format``: missing names raise KeyError."""

    def __init__(self, ns: Mapping[str, Any]) -> None:
        super().__init__()
        self._ns = ns

    def __missing__(self, key: str) -> Any:
        if key in self._ns:
            return self._ns[key]
        raise KeyError(key)


def parse_line(magic: Any, line: str) -> Any:
    """Parse options like a shell does (both quote styles), raising UsageError."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(
            f"Could not read the options {line!r}: {exc}. Check the quotes."
        ) from None
    return magic.parser.parse_args(words)


def check_options(args: Any) -> Options:
    """The parsed options of a ``%%chat`` line, checked (a UsageError says the fix)."""
    opts = Options(**{f: getattr(args, f) for f in Options.__dataclass_fields__})
    if opts.temperature is not None and not 0 <= opts.temperature <= 2:
        raise UsageError(
            f"-t/--temperature {opts.temperature} is out of range: use a value from 0 to 2."
        )
    if opts.max_tokens is not None and opts.max_tokens < 1:
        raise UsageError(
            f"--max-tokens {opts.max_tokens} must be a positive whole number, e.g. --max-tokens 256."
        )
    if opts.timeout is not None and opts.timeout <= 0:
        raise UsageError(
            f"--timeout {opts.timeout} must be a positive number of seconds, e.g. --timeout 30."
        )
    if opts.max_steps is not None and opts.max_steps < 1:
        raise UsageError(
            f"--max-steps {opts.max_steps} must be at least 1, e.g. --max-steps 8."
        )
    if opts.output is not None and not opts.output.isidentifier():
        raise UsageError(
            f"-o {opts.output!r} is not a valid variable name: use letters, digits and _, e.g. -o reply."
        )
    return opts


def tools_from(ns: Mapping[str, Any], opts: Options) -> list[Any]:
    """The functions named by ``--tools``, from the notebook's namespace."""
    if not opts.tools:
        return []
    names = [n.strip() for n in opts.tools.split(",")]
    if not all(names):
        raise UsageError(
            f"--tools {opts.tools!r} has an empty name: list functions separated "
            "by commas, e.g. --tools lookup,plot_sales."
        )
    fns = []
    for name in names:
        if name not in ns:
            raise UsageError(
                f"--tools: {name!r} is not defined in the notebook. Define the "
                "function (run its cell), or leave it out of --tools."
            )
        if not callable(ns[name]):
            raise UsageError(
                f"--tools: {name!r} is a {type(ns[name]).__name__}, not a function."
            )
        fns.append(ns[name])
    from .._core.tools import as_tools

    try:
        return list(as_tools(fns))
    except ConfigurationError as exc:
        raise UsageError(f"--tools: {exc}") from None


def schema_from(ns: Mapping[str, Any], name: str) -> Any:
    """``--schema NAME``: the notebook's model class or schema dict, checked now."""
    if name not in ns:
        raise UsageError(
            f"--schema {name}: there is no variable {name!r} in the notebook. "
            "Define a pydantic model class or a JSON schema (a dict) by that name."
        )
    value = ns[name]
    try:
        normalise(value)
    except ConfigurationError as exc:
        raise UsageError(f"--schema {name}: {exc}") from None
    return value


def with_variables(
    ns: Mapping[str, Any], body: str, names: str, budget: int | None, client: Client
) -> Messages:
    """``--with df,fig``: the cell's text, then each variable, as one message."""
    wanted = [n.strip() for n in names.split(",")]
    if not all(wanted):
        raise UsageError(
            f"--with {names!r} has an empty name: list variables separated by "
            "commas, e.g. --with df,fig."
        )
    missing = [n for n in wanted if n not in ns]
    if missing:
        raise UsageError(
            f"--with: {', '.join(map(repr, missing))} "
            f"{'is not a variable' if len(missing) == 1 else 'are not variables'} "
            "in the notebook. Define it first (run its cell), or leave it out of "
            "--with."
        )
    if budget is None:
        budget = client.context_budget
    elif budget < 1:
        raise UsageError(
            f"ChatMagics.context_budget = {budget} is not a number of tokens: use "
            "a positive whole number, e.g. %config ChatMagics.context_budget = 2000"
        )
    try:
        return as_messages([body, *(Named(n, ns[n]) for n in wanted)], budget)
    except ConfigurationError as exc:  # e.g. bytes that are no image
        raise UsageError(f"--with: {exc}") from None


def interpolate(ns: Mapping[str, Any], body: str) -> str:
    try:
        return string.Formatter().vformat(body, (), _Namespace(ns))
    except KeyError as exc:
        raise UsageError(
            f"-i: {{{exc.args[0]}}} is not a variable in the notebook. Define it, or "
            "drop -i to send the braces as they are."
        ) from None
    except (ValueError, IndexError, AttributeError) as exc:
        raise UsageError(
            f"-i: the message has braces that are not a {{name}} ({exc}). Double them "
            "({{ and }}) to send them as they are, or drop -i."
        ) from None
