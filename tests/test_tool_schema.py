"""A Python function as a tool: the JSON schema its type hints and docstring give (both
wire formats), the checking of a model's arguments against it, and the functions that
cannot be tools, refused when they are given, naming the parameter."""

from __future__ import annotations

import dataclasses
import socket
import sys
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from nbstream import Client, ConfigurationError, Tool, as_tool
from nbstream._core.providers import provider_for
from nbstream._core.tools import ToolArgumentsError
from tests.loopback import LoopbackServer


class Point(BaseModel):
    x: float
    y: float = 0.0


@dataclasses.dataclass
class Range:
    start: int
    end: int


class Filters(TypedDict):
    region: str
    year: int


def lookup(city: str, unit: Literal["C", "F"] = "C") -> dict[str, Any]:
    """Current temperature in a city.

    Args:
        city: The city's name,
            e.g. "Paris".
        unit: C or F.

    Returns:
        The temperature.
    """
    return {"city": city, "unit": unit}


def test_literal_default_and_docstring_make_the_schema() -> None:
    t = as_tool(lookup)
    assert t.name == "lookup" and not t.is_async
    assert t.description == "Current temperature in a city."
    assert t.parameters == {
        "type": "object",
        "properties": {
            "city": {
                "type": "string",
                "description": 'The city\'s name, e.g. "Paris".',
            },
            "unit": {
                "type": "string",
                "enum": ["C", "F"],
                "default": "C",
                "description": "C or F.",
            },
        },
        "required": ["city"],
        "additionalProperties": False,
    }


def test_both_wire_formats_carry_the_same_schema() -> None:
    t = as_tool(lookup)
    msgs = [{"role": "user", "content": "Hi"}]
    openai = provider_for("openai").body("m", msgs, None, {}, tools=[t.spec()])
    anthropic = provider_for("anthropic").body("m", msgs, None, {}, tools=[t.spec()])
    assert openai["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Current temperature in a city.",
                "parameters": t.parameters,
            },
        }
    ]
    assert anthropic["tools"] == [
        {
            "name": "lookup",
            "description": "Current temperature in a city.",
            "input_schema": t.parameters,
        }
    ]


@pytest.mark.parametrize(
    ("choice", "openai", "anthropic"),
    [
        ("auto", "auto", {"type": "auto"}),
        ("required", "required", {"type": "any"}),
        ("none", "none", {"type": "none"}),
        (
            "lookup",
            {"type": "function", "function": {"name": "lookup"}},
            {"type": "tool", "name": "lookup"},
        ),
    ],
)
def test_tool_choice_in_each_wire_format(
    choice: str, openai: Any, anthropic: Any
) -> None:
    spec = [as_tool(lookup).spec()]
    for api, want in (("openai", openai), ("anthropic", anthropic)):
        body = provider_for(api).body("m", [], None, {}, tools=spec, tool_choice=choice)  # type: ignore[arg-type]
        assert body["tool_choice"] == want


def test_optional_nested_models_dataclasses_typeddicts_and_containers() -> None:
    def plot(
        points: list[Point],
        window: Range,
        filters: Filters,
        title: str | None = None,
        weights: dict[str, float] | None = None,
        size: Annotated[int, Field(ge=1, le=10, description="1 to 10")] = 5,
    ) -> str:
        """Plot points."""
        return "ok"

    p = as_tool(plot).parameters
    props = p["properties"]
    assert p["required"] == ["points", "window", "filters"]
    assert props["points"] == {"type": "array", "items": {"$ref": "#/$defs/Point"}}
    assert p["$defs"]["Point"]["properties"] == {
        "x": {"type": "number"},
        "y": {"type": "number", "default": 0.0},
    }
    assert p["$defs"]["Range"]["required"] == ["start", "end"]
    assert p["$defs"]["Filters"]["properties"]["year"] == {"type": "integer"}
    assert props["title"] == {
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "default": None,
    }
    assert props["weights"]["anyOf"][0] == {
        "type": "object",
        "additionalProperties": {"type": "number"},
    }
    assert props["size"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 10,
        "default": 5,
        "description": "1 to 10",
    }
    assert not _title_keywords(p)  # pydantic's titles are dropped …

    def titled(title: str) -> None:
        """A parameter *named* title."""

    assert as_tool(titled).parameters["properties"] == {"title": {"type": "string"}}


class Old(typing.TypedDict):
    a: int


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="pydantic reads it from 3.12")
def test_typing_typeddict_before_312_fails_with_pydantics_advice() -> None:
    def fn(flt: Old) -> None:
        pass

    with pytest.raises(ConfigurationError) as info:
        as_tool(fn)
    assert "parameter 'flt'" in str(info.value)
    assert "typing_extensions.TypedDict" in str(info.value)


def _title_keywords(schema: Any) -> list[str]:
    """Every ``title`` keyword in a schema (a property called title is not one)."""
    if isinstance(schema, list):
        return [t for s in schema for t in _title_keywords(s)]
    if not isinstance(schema, dict):
        return []
    out = ["title"] if isinstance(schema.get("title"), str) else []
    for key, value in schema.items():
        if key in ("properties", "$defs"):
            out += [t for v in value.values() for t in _title_keywords(v)]
        else:
            out += _title_keywords(value)
    return out


def test_arguments_become_the_annotated_types() -> None:
    seen: dict[str, Any] = {}

    def plot(points: list[Point], window: Range, label: str = "x") -> None:
        seen.update(points=points, window=window, label=label)

    t = as_tool(plot)
    args, kwargs = t.bind(
        {"points": [{"x": 1}, {"x": 2, "y": 3}], "window": {"start": 1, "end": 5}}
    )
    t.fn(*args, **kwargs)
    assert seen["points"] == [Point(x=1), Point(x=2, y=3)]
    assert seen["window"] == Range(1, 5)
    assert seen["label"] == "x"  # not given: the function's own default
    assert "label" not in kwargs


def test_positional_only_parameters_are_passed_by_position() -> None:
    def add(a: int, b: int, /, *, scale: int = 1) -> int:
        return (a + b) * scale

    t = as_tool(add)
    args, kwargs = t.bind({"a": 2, "b": 3, "scale": 10})
    assert args == (2, 3) and kwargs == {"scale": 10}
    assert t.fn(*args, **kwargs) == 50


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({"unit": "C"}, "city: Field required"),
        (
            {"city": "Paris", "unit": "K"},
            "unit: Input should be 'C' or 'F' (got \"K\")",
        ),
        ({"city": "Paris", "when": "now"}, "when: not a parameter of this tool"),
        ({"city": ["Paris"]}, "city: Input should be a valid string"),
        (["Paris"], "must be a JSON object, not list"),
    ],
)
def test_arguments_that_do_not_fit_say_what_is_wrong(arguments: Any, says: str) -> None:
    with pytest.raises(ToolArgumentsError) as info:
        as_tool(lookup).bind(arguments)
    assert says in str(info.value)
    assert str(info.value).startswith(("Invalid arguments for lookup", "The arguments"))


def test_async_functions_and_callable_objects() -> None:
    async def fetch(url: str) -> str:
        """Fetch a page."""
        return url

    class Counter:
        def __call__(self, n: int) -> int:
            return n + 1

    assert as_tool(fetch).is_async
    counter = as_tool(Counter(), name="count")
    assert counter.name == "count" and counter.parameters["required"] == ["n"]


def test_numpy_and_sphinx_docstrings_describe_parameters() -> None:
    def numpy_style(city: str, days: int = 1) -> None:
        """Forecast for a city.

        Parameters
        ----------
        city : str
            The city.
        days : int
            How many days,
            at most 7.
        """

    def sphinx_style(city: str) -> None:
        """Forecast for a city.

        :param city: The city.
        :returns: the forecast
        """

    n = as_tool(numpy_style)
    assert n.description == "Forecast for a city."
    assert (
        n.parameters["properties"]["days"]["description"] == "How many days, at most 7."
    )
    assert n.parameters["properties"]["city"]["description"] == "The city."
    s = as_tool(sphinx_style)
    assert s.description == "Forecast for a city."
    assert s.parameters["properties"]["city"]["description"] == "The city."


class Opaque:
    pass


@pytest.mark.parametrize(
    ("annotation", "shown"),
    [
        (Opaque, "Opaque"),
        (socket.socket, "socket"),
        (Callable[[int], int], "Callable"),
    ],
)
def test_a_parameter_type_without_a_schema_fails_when_given_naming_it(
    annotation: Any, shown: str
) -> None:
    def fn(city: str, thing: Any) -> None:
        pass

    fn.__annotations__["thing"] = annotation
    with pytest.raises(ConfigurationError) as info:
        as_tool(fn)
    msg = str(info.value)
    assert "parameter 'thing'" in msg and shown in msg and "city" not in msg


def test_functions_that_cannot_be_tools_are_refused_with_the_fix() -> None:
    def star(*args: int) -> None:
        pass

    def stars(**kw: int) -> None:
        pass

    with pytest.raises(ConfigurationError, match=r"takes \*args"):
        as_tool(star)
    with pytest.raises(ConfigurationError, match=r"takes \*\*kw"):
        as_tool(stars)
    with pytest.raises(ConfigurationError, match="not allowed"):
        as_tool(lookup, name="look up!")
    with pytest.raises(ConfigurationError, match="not callable"):
        as_tool(42)  # type: ignore[arg-type]


def test_a_bad_tool_fails_before_anything_is_sent(server: LoopbackServer) -> None:
    def bad(conn: socket.socket) -> None:
        pass

    client = Client(base_url=server.base_url, model="m", api_key="sk-x")
    with pytest.raises(ConfigurationError, match="parameter 'conn'"):
        client.chat("Hi", tools=[lookup, bad])
    with pytest.raises(ConfigurationError, match="Two tools are named lookup"):
        client.chat("Hi", tools=[lookup, as_tool(bad.__class__, name="x"), lookup])
    with pytest.raises(ConfigurationError, match="max_steps=0"):
        client.chat("Hi", tools=[lookup], max_steps=0)
    with pytest.raises(ConfigurationError, match="tool_choice='lookups'"):
        client.chat("Hi", tools=[lookup], tool_choice="lookups")
    with pytest.raises(ConfigurationError, match="mixes functions"):
        client.chat("Hi", tools=[lookup, {"name": "x"}])
    assert server.requests == []


def test_a_tool_made_by_hand_keeps_its_name_and_description() -> None:
    t = as_tool(lookup, name="weather", description="The weather now.")
    assert isinstance(t, Tool) and as_tool(t) is t
    assert t.spec()["name"] == "weather"
    assert t.spec()["description"] == "The weather now."


def test_a_function_asked_again_reuses_its_schema_until_it_changes() -> None:
    def f(x: int) -> int:
        """Doubles."""
        return 2 * x

    first = as_tool(f)
    assert as_tool(f) is first  # each chat() call asks again: no rebuild
    assert as_tool(f, name="g") is not first
    f.__annotations__["x"] = str  # changed in place: built again
    assert as_tool(f).parameters["properties"]["x"] == {"type": "string"}
    f.__doc__ = "Triples."
    assert as_tool(f).description == "Triples."
