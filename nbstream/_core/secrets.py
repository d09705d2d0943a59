"""API keys: held so no repr shows them, checked when configured, scrubbed from
everything that came from the network.

A server can echo the key anywhere: a response header, an error message, an unknown
chunk field, the reply text. Every such string passes through a ``Scrubber`` *before*
it is cut short, stored, shown or recorded; the scrubber removes the key in the forms an
echo takes (as is, JSON- or Python-escaped, URL- or HTML-encoded) and any run of 8 or
more characters of it (a message cut in the middle of the key keeps a slice of it).
Reply text arrives in pieces, so a ``Redactor`` holds back the end of a piece while it
could be the start of the key, and the whole text is scrubbed once more when the turn
ends.

>>> s = Scrubber(["sk-test-0123456789abcdef"])
>>> s.scrub("you sent sk-test-0123456789abcdef, and again sk-test-01234567")
'you sent ***, and again ***'
>>> try:
...     check_key("sk-abc\\n", "api_key")
... except ValueError as err:
...     print(err)
The API key from api_key ends with a newline, which an HTTP header cannot carry. Strip it (e.g. key.strip(), or read the file with .read().strip()).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from urllib.parse import quote

from .errors import ConfigurationError

__all__ = ["MASK", "MIN_SLICE", "Redactor", "Scrubber", "Secret", "check_key"]

MASK = "***"
MIN_SLICE = 8  # a run this long of the key counts as the key


class Secret:
    """Holds an API key; its repr and str never show it, and it does not pickle."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("an API key is not picklable")


_NAMES = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab", " ": "a space"}


def check_key(value: str, where: str, what: str = "The API key") -> str:
    """Refuse a key that HTTP cannot carry as it is, saying what is wrong and where,
    never echoing the key. A key read from a file keeps its newline: the HTTP layer
    would then raise an error that quotes the header, key included."""
    if not value:
        raise ConfigurationError(
            f"{what} from {where} is empty. Set it to the key, or leave it unset "
            "for servers that need none."
        )
    n = len(value)
    for i, ch in enumerate(value):
        code = ord(ch)
        if 0x21 <= code <= 0x7E:
            continue
        problem = _NAMES.get(ch) or (
            "a control character"
            if code < 0x20 or code == 0x7F
            else "a non-ASCII character"
        )
        where_in = (
            "starts with"
            if i == 0
            else "ends with"
            if i == n - 1
            else f"has, at position {i + 1} of {n},"
        )
        fix = (
            "Strip it (e.g. key.strip(), or read the file with .read().strip())."
            if ch in _NAMES and value.strip() != value
            else "Check that the whole key was copied, and only the key."
        )
        raise ConfigurationError(
            f"{what} from {where} {where_in} {problem}, which an HTTP header cannot "
            f"carry. {fix}"
        )
    return value


def _forms(secret: str) -> set[str]:
    """The ways an echo can spell the key."""
    forms = {
        secret,
        json.dumps(secret)[1:-1],
        repr(secret)[1:-1],
        quote(secret, safe=""),
        html.escape(secret),
    }
    return {f for f in forms if f}


class Scrubber:
    """Replaces every secret (and every run of ``MIN_SLICE`` or more of its characters)
    in a string. Falsy when there is nothing to scrub, so callers can skip the work."""

    __slots__ = ("__weakref__", "_forms", "_grams", "_runs", "_starts")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for s in secrets:
            if s:
                forms |= _forms(s)
        self._build(forms)

    def _build(self, forms: set[str]) -> None:
        self._forms = sorted(forms, key=len, reverse=True)
        self._starts = tuple(sorted(forms, key=len))
        self._grams = frozenset(
            f[i : i + MIN_SLICE] for f in forms for i in range(len(f) - MIN_SLICE + 1)
        )
        chars = "".join(sorted({c for f in forms for c in f}))
        # only runs of the key's own characters can hold a slice of it
        self._runs = (
            re.compile(f"[{re.escape(chars)}]{{{MIN_SLICE},}}") if self._grams else None
        )

    def __bool__(self) -> bool:
        return bool(self._forms)

    @property
    def forms(self) -> tuple[str, ...]:
        return self._starts

    def scrub(self, text: str, *, same_length: bool = False) -> str:
        """``text`` with every secret masked (``***``, or ``*`` per character when
        ``same_length``, which keeps byte offsets of a recording)."""
        if not self._forms or not text:
            return text
        for f in self._forms:
            if f in text:
                text = text.replace(f, "*" * len(f) if same_length else MASK)
        if self._runs is None:
            return text
        spans: list[tuple[int, int]] = []
        grams = self._grams
        for m in self._runs.finditer(text):
            a, b = m.span()
            i = a
            while i <= b - MIN_SLICE:
                if text[i : i + MIN_SLICE] in grams:
                    end = i + MIN_SLICE
                    while end < b and text[end - MIN_SLICE + 1 : end + 1] in grams:
                        end += 1
                    spans.append((i, end))
                    i = end
                else:
                    i += 1
        if not spans:
            return text
        out: list[str] = []
        pos = 0
        for a, b in spans:
            out.append(text[pos:a])
            out.append("*" * (b - a) if same_length else MASK)
            pos = b
        out.append(text[pos:])
        return "".join(out)

    def cut(self, text: str, limit: int) -> str:
        """``text`` scrubbed, then cut to ``limit`` characters (``…`` marks a cut).
        Only a window a little longer than the limit is scrubbed, so that a key lying
        across the cut is masked whole before the cut: no slice of it survives."""
        margin = len(self._forms[0]) if self._forms else 0
        head = self.scrub(text[: limit + margin])
        if len(head) > limit or len(text) > limit + margin:
            return head[:limit] + "…"
        return head

    def scrub_bytes(self, data: bytes) -> bytes:
        """Mask the key's UTF-8 bytes in ``data``, keeping its length."""
        if not self._forms or not data:
            return data
        as_bytes = Scrubber()
        as_bytes._build({f.encode().decode("latin-1") for f in self._forms})
        return as_bytes.scrub(data.decode("latin-1"), same_length=True).encode(
            "latin-1"
        )


_MASKING = "\x00masking"  # a marker no reply text is compared against by value


class Redactor:
    """Scrubs a text that arrives in pieces (a reply's text, reasoning, tool
    arguments), per channel. ``feed`` returns what is safe to show now: the same
    string object when nothing can be part of the key, which is the common case and
    costs two substring checks; ``flush`` releases what was held back.

    The end of a piece is held back while it is the beginning of the key, so a key split
    across pieces is masked as a whole; after a mask, a channel is checked in full until
    a piece comes clean (the rest of a cut key). A slice from the middle of the key
    split across pieces is caught when the turn ends: the whole text is scrubbed then.
    """

    __slots__ = ("_hot", "_keys", "_scrubber", "_tests")

    def __init__(self, scrubber: Scrubber) -> None:
        self._scrubber = scrubber
        self._keys = tuple(f for f in scrubber.forms if len(f) >= 2)
        self._tests = tuple((k[:2], k[0]) for k in self._keys)
        # channel -> the text held back, or _MASKING after a mask (the rest of a cut
        # key may follow); a channel with neither is not in the dict
        self._hot: dict[object, str] = {}

    def feed(self, channel: object, piece: str) -> str:
        held = self._hot.pop(channel, None)
        s = piece if held is None or held is _MASKING else held + piece
        if held is not _MASKING:
            for head, _ in self._tests:
                if head in s:
                    break  # the start of a key may be here: the full check
            else:
                # nothing here starts a key; its last character might, with what comes
                for _, first in self._tests:
                    if s.endswith(first):
                        self._hot[channel] = s[-1]
                        return s[:-1]
                return s  # the fast path: three substring checks
        joined = s
        s = self._scrubber.scrub(joined)
        keep = 0
        for k in self._keys:
            p = s.find(k[0], max(0, len(s) - len(k) + 1))
            while p != -1:
                if k.startswith(s[p:]):
                    keep = max(keep, len(s) - p)
                    break
                p = s.find(k[0], p + 1)
        if keep:
            self._hot[channel] = s[-keep:]
            return s[:-keep]
        if s != joined:
            self._hot[channel] = _MASKING
        return s

    def flush(self, channel: object) -> str:
        held = self._hot.pop(channel, "")
        return "" if held is _MASKING else held

    def channels(self) -> list[object]:
        return list(self._hot)
