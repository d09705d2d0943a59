"""Python functions as tools: the JSON schema from the type hints and the docstring (by
pydantic), and the checking of a model's arguments against it. No I/O.

A tool is described once, neutrally (``name``, ``description``, ``parameters``); each
provider turns that into its own wire form (``provider.tools_param``).

>>> from typing import Literal
>>> def lookup(city: str, unit: Literal["C", "F"] = "C") -> str:
...     '''Current temperature in a city.
...
...     Args:
...         city: The city's name, e.g. "Paris".
...     '''
>>> t = as_tool(lookup)
>>> t.description, t.parameters["required"], t.parameters["properties"]["unit"]["enum"]
('Current temperature in a city.', ['city'], ['C', 'F'])
>>> t.bind({"city": "Rome"})
((), {'city': 'Rome'})
"""

from __future__ import annotations

import inspect
import json
import re
import typing
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .errors import ConfigurationError
from .toolresult import MAX_RESULT_CHARS

__all__ = ["MAX_RESULT_CHARS", "Tool", "ToolArgumentsError", "as_tool", "as_tools"]

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what both providers accept as a name
_SECTION = re.compile(
    r"(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters"
    r"|Returns?|Yields?|Raises|Examples?|Notes?|See Also|References|Warnings?)\s*:?\s*"
)
_PARAM_SECTIONS = {
    "Args",
    "Arguments",
    "Parameters",
    "Params",
    "Keyword Args",
    "Keyword Arguments",
    "Other Parameters",
}
_GOOGLE_ITEM = re.compile(r"(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)")
_NUMPY_ITEM = re.compile(r"(\*{0,2}\w+)\s*(?::.*)?")
_SPHINX = re.compile(r":param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)")


class ToolArgumentsError(ValueError):
    """The model's arguments do not fit the tool; the message says how, for the model."""


@dataclass(frozen=True, eq=False)
class Tool:
    """A Python function the model may call, with the JSON schema of its parameters.

    ``tools=[fn]`` makes one with ``as_tool(fn)``; make one yourself to give another
    name or description: ``as_tool(fn, name="weather", description="…")``.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any]
    is_async: bool
    max_result_chars: int = MAX_RESULT_CHARS
    _model: type[BaseModel] | None = None
    _params: tuple[tuple[str, str, bool], ...] = ()  # (field, name, positional only)

    def spec(self) -> dict[str, Any]:
        """The neutral description: ``{"name", "description", "parameters"}``."""
        return {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
        }

    def bind(self, arguments: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``(args, kwargs)`` to call the function with, from the model's arguments
        (parsed JSON), validated and converted by the schema's types (a nested model
        becomes its class). Raises ``ToolArgumentsError`` saying what is wrong."""
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise ToolArgumentsError(
                f"The arguments of {self.name} must be a JSON object, not "
                f"{type(arguments).__name__} ({_short(arguments)})."
            )
        if self._model is None:
            return (), dict(arguments)
        try:
            obj = self._model.model_validate(arguments)
        except ValidationError as exc:
            raise ToolArgumentsError(_explain(self.name, exc)) from None
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        given = obj.model_fields_set
        for field, name, positional in self._params:
            if field not in given:
                continue  # the function's own default applies
            if positional:
                args.append(getattr(obj, field))
            else:
                kwargs[name] = getattr(obj, field)
        return tuple(args), kwargs

    def __repr__(self) -> str:
        return f"<Tool {self.name}>"


def as_tool(
    fn: Callable[..., Any] | Tool,
    *,
    name: str | None = None,
    description: str | None = None,
    max_result_chars: int = MAX_RESULT_CHARS,
) -> Tool:
    """A ``Tool`` from a function (sync or async): its name, its docstring as the
    description (per-parameter lines of a Google, NumPy or Sphinx docstring describe
    the parameters), its type hints as the schema. A parameter whose type has no JSON
    schema fails here, naming the parameter."""
    if isinstance(fn, Tool):
        return fn
    if not inspect.isfunction(fn):  # methods, callable objects …: made each time
        return _make(fn, name, description, max_result_chars)
    key = (name, description, max_result_chars, *_identity(fn))
    cached = _made.get(fn)
    if cached is not None and cached[0] == key:
        return cached[1]  # asked again with the same function (each chat() call)
    tool = _make(fn, name, description, max_result_chars)
    _made[fn] = (key, tool)
    return tool


def _make(
    fn: Callable[..., Any],
    name: str | None,
    description: str | None,
    max_result_chars: int,
) -> Tool:
    if not callable(fn):
        raise ConfigurationError(
            f"tools=[…] takes functions; {_short(fn)} ({type(fn).__name__}) is not "
            "callable."
        )
    tool_name = name or getattr(fn, "__name__", None) or type(fn).__name__
    if not _NAME.fullmatch(tool_name):
        raise ConfigurationError(
            f"The tool name {tool_name!r} is not allowed: use 1 to 64 letters, digits, "
            "_ or - (as_tool(fn, name='…') gives it another)."
        )
    doc = inspect.getdoc(fn) or ""
    summary, param_docs = _docstring(doc)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"The tool {tool_name} has no signature to read ({exc}): wrap it in a "
            "function with type hints."
        ) from None
    try:
        target = (
            fn if inspect.isroutine(fn) or inspect.isclass(fn) else type(fn).__call__
        )
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception as exc:  # a forward reference that does not resolve, …
        raise ConfigurationError(
            f"The type hints of the tool {tool_name} cannot be read ({type(exc).__name__}"
            f": {exc}). Define the types they name before the function."
        ) from None
    fields: dict[str, Any] = {}
    params: list[tuple[str, str, bool]] = []
    for i, p in enumerate(sig.parameters.values()):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            star = "*" if p.kind is p.VAR_POSITIONAL else "**"
            raise ConfigurationError(
                f"The tool {tool_name} takes {star}{p.name}: a model can only pass "
                "named parameters, each with a type. Name them in the signature."
            )
        annotation = hints.get(p.name, Any)
        _check_type(tool_name, p.name, annotation)
        field = f"p{i}"
        default = ... if p.default is p.empty else p.default
        info = Field(default, alias=p.name)
        if (
            p.name in param_docs
        ):  # only then: Annotated[..., Field(description=…)] stays
            info = Field(default, alias=p.name, description=param_docs[p.name])
        fields[field] = (annotation, info)
        params.append((field, p.name, p.kind is p.POSITIONAL_ONLY))
    try:
        model = pydantic.create_model(
            f"{tool_name}_arguments",
            __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=False),
            **fields,
        )
        schema = _clean(model.model_json_schema(by_alias=True))
    except Exception as exc:
        raise ConfigurationError(
            f"The tool {tool_name} cannot be described as a JSON schema "
            f"({type(exc).__name__}: {exc})."
        ) from None
    schema.pop("title", None)
    schema.setdefault("properties", {})
    schema.setdefault("required", [])
    return Tool(
        name=tool_name,
        description=description if description is not None else summary,
        parameters=schema,
        fn=fn,
        is_async=_is_async(fn),
        max_result_chars=max_result_chars,
        _model=model,
        _params=tuple(params),
    )


# Tools already made, by function: a schema costs ~1.4 ms to build, and a notebook asks
# with the same functions again and again. A redefined function is another object; one
# whose annotations, defaults or docstring were changed in place is built again.
_made: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], Tool]] = (
    weakref.WeakKeyDictionary()
)


def _identity(fn: Any) -> tuple[Any, ...]:
    return (
        fn.__doc__,
        dict(fn.__annotations__),
        fn.__defaults__,
        dict(fn.__kwdefaults__ or {}),
    )


def as_tools(tools: Iterable[Callable[..., Any] | Tool] | None) -> tuple[Tool, ...]:
    """Every function as a ``Tool``; two with the same name are refused."""
    out: list[Tool] = []
    if tools is None:
        return ()
    if callable(tools) or isinstance(tools, Tool):
        tools = [tools]
    seen: set[str] = set()
    for fn in tools:
        t = as_tool(fn)
        if t.name in seen:
            raise ConfigurationError(
                f"Two tools are named {t.name}: give one another name with "
                f"as_tool(fn, name='…')."
            )
        seen.add(t.name)
        out.append(t)
    return tuple(out)


# -- schema ---------------------------------------------------------------------------


def _check_type(tool: str, param: str, annotation: Any) -> None:
    """Fails, naming the parameter, when its type has no JSON schema."""
    try:
        TypeAdapter(annotation).json_schema()
    except Exception as exc:
        shown = getattr(annotation, "__name__", None) or repr(annotation)
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigurationError(
            f"The tool {tool} cannot be offered: its parameter {param!r} has the type "
            f"{shown}, which has no JSON schema ({type(exc).__name__}: {_cut(why)}). "
            "Use str, int, float, bool, a Literal, a list or dict of those, a "
            "dataclass, a TypedDict or a pydantic model."
        ) from None


_NAMED = ("properties", "$defs", "definitions", "patternProperties")  # name → schema


def _clean(schema: Any) -> Any:
    """The schema without pydantic's ``title`` keywords (a property *named* title
    stays): shorter, and what both providers' examples look like."""
    if isinstance(schema, list):
        return [_clean(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in _NAMED and isinstance(value, dict):
            out[key] = {k: _clean(v) for k, v in value.items()}
            continue
        out[key] = _clean(value)
    return out


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 (an object with async __call__)
    return call is not None and inspect.iscoroutinefunction(call)


# -- docstrings -----------------------------------------------------------------------


def _docstring(doc: str) -> tuple[str, dict[str, str]]:
    """``(description, {parameter: description})`` from a Google, NumPy or Sphinx
    docstring; the description is what comes before the first section."""
    lines = doc.splitlines()
    summary: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    numpy = False  # the section's header was underlined: "name : type" items
    base: int | None = None  # the indentation of the section's items
    current: str | None = None
    i = 0
    while i < len(lines):
        line, stripped = lines[i], lines[i].strip()
        indent = len(line) - len(line.lstrip())
        underline = i + 1 < len(lines) and re.fullmatch(r"-{3,}", lines[i + 1].strip())
        m = _SECTION.fullmatch(stripped)
        if m and (stripped.endswith(":") or underline):
            section, numpy, base, current = m[1], bool(underline), None, None
            i += 2 if underline else 1
            continue
        i += 1
        sphinx = _SPHINX.fullmatch(stripped)
        if sphinx:
            section, current = "sphinx", sphinx[1]
            params[current] = sphinx[2].strip()
        elif stripped.startswith(":") and section in (None, "sphinx"):
            section, current = "sphinx", None  # :returns: and the like
        elif section is None:
            summary.append(line)
        elif not stripped:
            continue
        elif section in _PARAM_SECTIONS:
            if base is None:
                base = indent
            if indent <= base:
                item = (_NUMPY_ITEM if numpy else _GOOGLE_ITEM).fullmatch(stripped)
                current = item[1].lstrip("*") if item else None
                if current is not None:
                    params[current] = "" if numpy or item is None else item[2].strip()
            elif current is not None:
                params[current] = (params[current] + " " + stripped).strip()
        elif section == "sphinx" and current is not None:
            params[current] = (params[current] + " " + stripped).strip()
    return "\n".join(summary).strip(), {k: v for k, v in params.items() if v}


# -- explaining a bad call, to the model ------------------------------------------------


def _explain(name: str, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors(include_url=False)[:8]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "(the arguments)"
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            msg = "not a parameter of this tool"
        elif "input" in err and err.get("type") != "missing":
            msg += f" (got {_short(err['input'])})"
        problems.append(f"{where}: {msg}")
    more = exc.error_count() - len(problems)
    tail = f"; and {more} more" if more > 0 else ""
    return f"Invalid arguments for {name}: " + "; ".join(problems) + tail + "."


def _cut(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
