"""The neutral message format nbstream keeps in a transcript, and that every provider
turns into its own wire format (``provider.wire``).

Plain dicts, close to what people already write::

    {"role": "user", "content": "Hi"}
    {"role": "user", "content": [
        {"type": "text", "text": "Describe this"},
        {"type": "image", "media_type": "image/png", "data": "<base64>"},   # or "url"
    ]}
    {"role": "assistant", "content": "Let me look.", "tool_calls": [
        {"id": "call_1", "name": "lookup", "arguments": "{\\"city\\": \\"Paris\\"}"},
    ]}
    {"role": "tool", "tool_call_id": "call_1", "name": "lookup",
     "content": "21 C", "is_error": False}

Messages already in a provider's own format (OpenAI's ``image_url`` parts and
``function`` tool calls, Anthropic's content blocks) are recognised and passed on, so
a request written for one provider still works when the conversation falls back to
another where the shapes agree.

>>> image({"type": "image", "media_type": "image/png", "data": "AAAA"})
('image/png', 'AAAA', None)
"""

from __future__ import annotations

import json
from typing import Any

from .images import label

__all__ = ["image", "neutral_calls", "summary", "text_of"]


def image(part: dict[str, Any]) -> tuple[str, str | None, str | None] | None:
    """``(media_type, base64 data, url)`` of a neutral image part, else ``None``."""
    if part.get("type") != "image" or "source" in part:
        return None
    data, url = part.get("data"), part.get("url")
    if not isinstance(data, str) and not isinstance(url, str):
        return None
    media = part.get("media_type")
    return (
        media if isinstance(media, str) else "image/png",
        data if isinstance(data, str) else None,
        url if isinstance(url, str) else None,
    )


def neutral_calls(calls: Any) -> list[dict[str, Any]]:
    """Tool calls as ``{"id", "name", "arguments"}``, from the neutral or OpenAI form."""
    out: list[dict[str, Any]] = []
    for c in calls if isinstance(calls, list) else []:
        if not isinstance(c, dict):
            continue
        fn = c.get("function")
        if isinstance(fn, dict):  # OpenAI's own form
            out.append(
                {
                    "id": c.get("id", ""),
                    "name": fn.get("name", ""),
                    "arguments": fn.get("arguments") or "{}",
                }
            )
        else:
            out.append(
                {
                    "id": c.get("id", ""),
                    "name": c.get("name", ""),
                    "arguments": c.get("arguments") or "{}",
                }
            )
    return out


def text_of(content: Any) -> str:
    """The text of a message's content (its text parts, joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"]
            for p in content
            if isinstance(p, dict)
            and p.get("type") == "text"
            and isinstance(p.get("text"), str)
        )
    return ""


def summary(content: Any) -> str:
    """A message's content as one readable string: its text, and each image as a short
    label (``[image/png 640x480, 42 KB]``), never its data.

    >>> summary([{"type": "text", "text": "See"}, {"type": "image", "url": "https://x"}])
    'See\\n\\n[image at https://x]'
    """
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return "" if content is None else json.dumps(content, ensure_ascii=False)
    out: list[str] = []
    for p in content:
        if (
            isinstance(p, dict)
            and p.get("type") == "text"
            and isinstance(p.get("text"), str)
        ):
            out.append(p["text"])
        elif isinstance(p, dict) and image(p) is not None:
            out.append(f"[{label(p)}]")
        elif isinstance(p, dict) and p.get("type") == "image_url":  # OpenAI's own form
            url = str((p.get("image_url") or {}).get("url", ""))
            if url.startswith("data:") and ";base64," in url:
                media, data = url[5:].split(";base64,", 1)
                out.append(f"[{label({'media_type': media, 'data': data})}]")
            else:
                out.append(f"[{label({'url': url})}]")
        else:
            out.append(json.dumps(p, ensure_ascii=False))
    return "\n\n".join(out)
