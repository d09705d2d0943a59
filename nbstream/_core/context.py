"""What a user gives as a message, as neutral messages: ``client.chat("Hi")``, a list
of messages, or a list of text and objects that becomes **one user message**::

    client.chat(["Describe this", fig, df])

- ``str``: the user's own words, sent as they are.
- a matplotlib Figure (or Axes), a PIL image, or PNG/JPEG/GIF/WebP bytes: an image part
  (``images.py``); the providers turn it into their own wire form.
- anything else as bounded text (``textforms.py``): a DataFrame's schema, head and
  summary, a Series, an array, a dict or list, else its ``repr``. The objects of one
  message share a budget of tokens (estimated as characters / 4): each takes what it
  needs if all fit, otherwise the small ones keep theirs and the large ones share the
  rest equally, each saying what it left out.
- neutral parts (``{"type": "text" | "image", …}``) are kept as they are.

A message with no image is sent as one string (every server takes that); with images,
as a list of parts, consecutive text joined. ``Named`` gives an object the name of the
notebook variable it came from (``%%chat --with df``).

>>> as_messages(["Count:", [1, 2, 3]], budget=100)
[{'role': 'user', 'content': 'Count:\\n\\nlist, 3 items:\\n[1, 2, 3]'}]
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError
from .images import figure_part, image_part, is_figure, is_pil_image, pil_part
from .messages import image
from .textforms import CHARS_PER_TOKEN, text_form

__all__ = ["DEFAULT_BUDGET", "Named", "allocate", "as_messages", "user_message"]

DEFAULT_BUDGET = 2000  # tokens for the objects of one message, shown as text


@dataclass(frozen=True)
class Named:
    """An object and the name of the variable it came from (shown to the model)."""

    name: str
    value: Any


def as_messages(messages: Any, budget: int = DEFAULT_BUDGET) -> list[dict[str, Any]]:
    """A string, a list of messages (dicts with a ``role``), or text and objects for
    one user message (a list, or a single object), as neutral messages."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if isinstance(messages, dict) and "role" in messages:  # one message, not in a list
        return [dict(messages)]
    if not isinstance(messages, list | tuple):
        return [user_message([messages], budget)]
    roles = [isinstance(m, dict) and "role" in m for m in messages]
    if all(roles):
        return [dict(m) for m in messages]
    if any(roles):
        raise ConfigurationError(
            f"Item {roles.index(True)} of the message is a message (a dict with a "
            "'role'), but others are not: give either a list of messages, or text and "
            "objects for one message, e.g. ['Describe this', df]."
        )
    return [user_message(messages, budget)]


def _is_part(d: Any) -> bool:
    if not isinstance(d, dict):
        return False
    if d.get("type") == "text":
        return isinstance(d.get("text"), str)
    return d.get("type") == "image_url" or image(d) is not None


def user_message(items: Sequence[Any], budget: int = DEFAULT_BUDGET) -> dict[str, Any]:
    """Text and objects, in order, as one user message (see the module docstring)."""
    parts: list[dict[str, Any] | None] = []  # None: an object's text, made below
    pending: list[tuple[int, Any, str | None]] = []
    for i, item in enumerate(items):
        name, value = (
            (item.name, item.value) if isinstance(item, Named) else (None, item)
        )
        if name is None and isinstance(value, str):
            parts.append({"type": "text", "text": value})
        elif name is None and _is_part(value):
            parts.append(_checked(value, i))
        elif isinstance(value, bytes | bytearray | memoryview):
            what = f"The bytes of `{name}`" if name else f"The bytes of item {i}"
            parts += _captioned(image_part(bytes(value), name=name, what=what), name)
        elif is_figure(value):
            parts += _captioned(figure_part(value, name=name), name)
        elif is_pil_image(value):
            parts += _captioned(pil_part(value, name=name), name)
        else:
            pending.append((len(parts), value, name))
            parts.append(None)
    for (at, _, _), text in zip(pending, _texts(pending, budget), strict=True):
        parts[at] = {"type": "text", "text": text}
    return {"role": "user", "content": _joined([p for p in parts if p is not None])}


def _checked(part: dict[str, Any], i: int) -> dict[str, Any]:
    """A neutral part as given; an image's media type and size are read from its data
    (a wrong media type is corrected: the providers refuse a mismatch)."""
    part = dict(part)
    data = part.get("data")
    if part.get("type") != "image" or not isinstance(data, str):
        return part
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        raise ConfigurationError(
            f"Item {i} of the message is an image part whose data is not base64."
        ) from None
    found = image_part(raw, what=f"The data of item {i}")  # refuses a non-image
    part["media_type"] = found["media_type"]
    for key in ("width", "height"):
        if key in found:
            part[key] = found[key]
    return part


def _captioned(part: dict[str, Any], name: str | None) -> list[dict[str, Any]]:
    """A named image follows a line naming it, so the model can tell which it is."""
    return [{"type": "text", "text": f"Image `{name}`:"}, part] if name else [part]


def _texts(pending: list[tuple[int, Any, str | None]], budget: int) -> list[str]:
    """Each object's text, all of them within ``budget`` tokens together."""
    if not pending:
        return []
    total = max(budget, 1) * CHARS_PER_TOKEN
    full = [text_form(obj, total, name) for _, obj, name in pending]
    shares = allocate([len(t) for t in full], total)
    return [
        t if len(t) <= share else text_form(obj, share, name)
        for t, share, (_, obj, name) in zip(full, shares, pending, strict=True)
    ]


def allocate(sizes: list[int], total: int) -> list[int]:
    """Shares of ``total`` for items of these sizes: every item its size if all fit;
    otherwise the smallest keep theirs while they are under an equal share of what is
    left, and the others split the rest equally.

    >>> allocate([10, 500, 1000], 600)
    [10, 295, 295]
    """
    shares = list(sizes)
    left, todo = total, sorted(range(len(sizes)), key=sizes.__getitem__)
    while todo:
        share = left // len(todo)
        if sizes[todo[0]] <= share:
            left -= sizes[todo.pop(0)]
            continue
        for i in todo:
            shares[i] = share
        break
    return shares


def _joined(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Consecutive text parts joined by a blank line; all text: one string."""
    out: list[dict[str, Any]] = []
    for p in parts:
        if _plain(p) and out and _plain(out[-1]):
            out[-1] = {"type": "text", "text": f"{out[-1]['text']}\n\n{p['text']}"}
        else:
            out.append(p)
    if all(_plain(p) for p in out):
        return "\n\n".join(p["text"] for p in out)
    return out


def _plain(p: dict[str, Any]) -> bool:
    """A text part with nothing else in it (one with cache_control … is kept apart)."""
    return p.get("type") == "text" and p.keys() == {"type", "text"}
