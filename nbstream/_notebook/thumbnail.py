"""Small images to embed in an exported conversation, made from the bytes that were sent
(never fetched: an image sent by URL is shown as its address, not loaded).

The type comes from the bytes themselves (PNG, JPEG, GIF or WebP; anything else, SVG
included, is not embedded) and the base64 is decoded and written again, so what lands
in a ``data:`` URL is only ever base64 of an image. With Pillow installed (matplotlib
brings it) the picture is scaled down to ``MAX_SIDE`` pixels; without it, an image up to
``MAX_EMBED`` bytes is embedded as it is, and shown small.

>>> thumbnail_of("image/png", "bm90IGFuIGltYWdl") is None  # "not an image"
True
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import re
from dataclasses import dataclass

__all__ = ["MAX_EMBED", "MAX_SIDE", "Thumbnail", "thumbnail_of"]

MAX_SIDE = 256  # pixels, the longer side of a thumbnail
MAX_EMBED = 512 * 1024  # bytes of an image embedded unscaled (no Pillow)
MAX_PIXELS = 50_000_000  # larger than this is not decoded (a decompression bomb)
_SPACE = re.compile(rb"\s+")


@dataclass(frozen=True, slots=True)
class Thumbnail:
    """An image ready for a ``data:`` URL: its type, its base64, the size to show it
    at, and what was sent (type, size in pixels when known, bytes)."""

    media_type: str
    data: str
    width: int | None
    height: int | None
    sent: str  # e.g. "image/png, 1280x720, 412 KB"

    @property
    def url(self) -> str:
        return f"data:{self.media_type};base64,{self.data}"


def _sniff(raw: bytes) -> str | None:
    if raw.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if raw.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if raw.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "image/webp"
    return None


def _size(n: int) -> str:
    return (
        f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{max(1, n // 1024)} KB"
    )


def decode(data: str) -> bytes | None:
    """Strict base64 (whitespace allowed, as in a wrapped data URL), else None."""
    try:
        return base64.b64decode(_SPACE.sub(b"", data.encode("ascii")), validate=True)
    except (ValueError, binascii.Error, UnicodeEncodeError):
        return None


@functools.lru_cache(maxsize=64)  # an export writes Markdown and HTML, often again
def thumbnail_of(media_type: str, data: str) -> Thumbnail | None:
    """A thumbnail of the base64 image ``data``, or None when it is not an image of a
    kind that may be embedded (what was declared is only a caption: ``media_type``)."""
    raw = decode(data)
    kind = _sniff(raw) if raw else None
    if raw is None or kind is None:
        return None
    scaled = _scaled(raw)
    if scaled is not None:
        out, mime, (w, h), (tw, th) = scaled
        return Thumbnail(
            mime,
            base64.b64encode(out).decode("ascii"),
            tw,
            th,
            f"{kind}, {w}x{h}, {_size(len(raw))}",
        )
    if len(raw) > MAX_EMBED:
        return None
    return Thumbnail(
        kind,
        base64.b64encode(raw).decode("ascii"),
        None,
        None,
        f"{kind}, {_size(len(raw))}",
    )


def _scaled(raw: bytes) -> tuple[bytes, str, tuple[int, int], tuple[int, int]] | None:
    """(bytes, type, original size, thumbnail size) with Pillow, else None."""
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(io.BytesIO(raw)) as img:
            w, h = img.size
            if w * h > MAX_PIXELS or img.format not in ("PNG", "JPEG", "GIF", "WEBP"):
                return None
            img.seek(0)  # the first frame of an animation
            img.draft("RGB", (MAX_SIDE, MAX_SIDE))  # a JPEG decodes at 1/2 … 1/8 size
            img.thumbnail((MAX_SIDE, MAX_SIDE), reducing_gap=2.0)
            small = img.copy()
        buf = io.BytesIO()
        if img.format == "JPEG":  # a photo stays a JPEG; plots and screens PNG
            small.convert("RGB").save(buf, "JPEG", quality=80)
            mime = "image/jpeg"
        else:
            if small.mode not in ("1", "L", "LA", "P", "RGB", "RGBA"):
                small = small.convert("RGBA")
            small.save(buf, "PNG", optimize=True)
            mime = "image/png"
        return buf.getvalue(), mime, (w, h), small.size
    except Exception:  # a broken or hostile file: not embedded
        return None
