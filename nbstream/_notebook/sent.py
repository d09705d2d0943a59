"""What a turn sent besides its words, for the views: each image as a small thumbnail
made in the kernel from the data that was sent (never loaded from a URL), with its
label. Pure presentation, no I/O.

The HTML here is ours, not the model's: an ``<img>`` whose ``src`` is a ``data:`` URL
of a PNG or JPEG thumbnail we encoded, every label escaped.

>>> from nbstream._core.images import png_encode, image_part
>>> part = image_part(png_encode(b"\\x00\\x00\\x00\\xff" * 4, 2, 2), name="fig")
>>> sent_text([{"role": "user", "content": [{"type": "text", "text": "Hi"}, part]}])
'Sent: fig: image/png 2x2, 72 bytes'
"""

from __future__ import annotations

from typing import Any

from markdown_it.common.utils import escapeHtml

from .._core.images import label, thumbnail
from .._core.messages import image

__all__ = ["content_html", "sent_html", "sent_images", "sent_text"]

_SAFE_TYPES = ("image/png", "image/jpeg")  # what thumbnail() makes


def _images(content: Any) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return []
    return [p for p in content if isinstance(p, dict) and image(p) is not None]


def sent_images(content: Any) -> list[dict[str, Any]]:
    """Each image of a message's content as ``{"label", "media_type", "data",
    "width", "height"}`` (a thumbnail), or ``{"label"}`` alone when there is none (an
    image by URL, or one that cannot be read)."""
    out: list[dict[str, Any]] = []
    for p in _images(content):
        thumb = thumbnail(p)
        out.append({"label": label(p), **(thumb or {})})
    return out


def _last_user(messages: list[dict[str, Any]]) -> Any:
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            return m.get("content")
    return None


def _img(item: dict[str, Any]) -> str:
    text = escapeHtml(item["label"])
    media, data = item.get("media_type"), item.get("data")
    if media not in _SAFE_TYPES or not isinstance(data, str):
        return f'<span class="nbs-thumb">[{text}]</span>'
    w, h = int(item["width"]), int(item["height"])
    return (
        f'<img class="nbs-thumb" src="data:{media};base64,{escapeHtml(data)}" '
        f'width="{w}" height="{h}" alt="{text}" title="{text}" '
        'style="vertical-align: middle" />'
    )


def _strip(items: list[dict[str, Any]]) -> str:
    shown = " ".join(
        f"{_img(i)} <small>{escapeHtml(i['label'])}</small>" for i in items
    )
    return f'<p class="nbs-sent"><small>Sent:</small> {shown}</p>\n'


def sent_html(messages: list[dict[str, Any]]) -> str:
    """A line with the thumbnails of the images the last user message sent ("" if
    none), for the top of a reply's final output."""
    items = sent_images(_last_user(messages))
    return _strip(items) if items else ""


def sent_text(messages: list[dict[str, Any]]) -> str:
    """The same as plain text: ``Sent: fig: image/png 640x480, 19 KB`` ("" if none)."""
    items = sent_images(_last_user(messages))
    return "Sent: " + " · ".join(i["label"] for i in items) if items else ""


def content_html(content: list[Any]) -> str:
    """A message made of parts (``%chat history``): its text escaped, line breaks
    kept, each image a thumbnail."""
    out: list[str] = []
    for p in content:
        if isinstance(p, dict) and p.get("type") == "text":
            text = escapeHtml(str(p.get("text", ""))).replace("\n", "<br />\n")
            out.append(f"<p>{text}</p>\n")
        elif isinstance(p, dict) and image(p) is not None:
            out.append(_strip(sent_images([p])))
        else:
            out.append(f"<pre><code>{escapeHtml(str(p))}</code></pre>\n")
    return "".join(out)
