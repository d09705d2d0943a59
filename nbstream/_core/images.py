"""Images as neutral message parts (see ``messages.py``): the media type and the size
read from the bytes themselves (never from a file name), matplotlib figures and PIL
images encoded, a short label for records and views, and small thumbnails. No I/O:
everything works in memory.

A part made here carries, beside ``type``, ``media_type`` and ``data`` (base64),
``width`` and ``height`` when the header says, ``name`` when it came from a named
variable, and ``drawn_from`` (the size at the figure's own dpi) when a figure was drawn
smaller to fit. The providers build their wire parts from ``media_type`` and ``data``
only, so these keys are never sent.

>>> png = png_encode(bytes([255, 0, 0, 255]) * 4, 2, 2)
>>> sniff(png)
('image/png', 2, 2)
>>> label(image_part(png))
'image/png 2x2, 73 bytes'
"""

from __future__ import annotations

import base64
import functools
import io
import math
import struct
import zlib
from typing import Any

from .errors import ConfigurationError

__all__ = [
    "FIGURE_MAX_SIDE",
    "figure_part",
    "image_part",
    "is_figure",
    "is_pil_image",
    "label",
    "nbytes",
    "pil_part",
    "png_encode",
    "sniff",
    "thumbnail",
    "tokens",
    "without_image_data",
]

# A figure is drawn with at most this many pixels on its long side: both providers scale
# larger images down anyway (Anthropic above 1568 px, "without any additional model
# performance"; OpenAI's high detail to 768 px on the short side), so more pixels would
# only cost bytes and time.
FIGURE_MAX_SIDE = 1568
THUMBNAIL_SIDE = 160
_PNG = b"\x89PNG\r\n\x1a\n"


def sniff(data: bytes) -> tuple[str, int | None, int | None] | None:
    """``(media type, width, height)`` from an image's first bytes, or ``None`` if they
    are not a PNG, JPEG, GIF or WebP image (the formats both providers take)."""
    if data[:8] == _PNG:
        if data[12:16] == b"IHDR" and len(data) >= 24:
            w, h = struct.unpack(">II", data[16:24])
            return "image/png", w, h
        return "image/png", None, None
    if data[:3] == b"\xff\xd8\xff":
        return ("image/jpeg", *_jpeg_size(data))
    if data[:6] in (b"GIF87a", b"GIF89a"):
        if len(data) >= 10:
            w, h = struct.unpack("<HH", data[6:10])
            return "image/gif", w, h
        return "image/gif", None, None
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ("image/webp", *_webp_size(data))
    return None


def _jpeg_size(data: bytes) -> tuple[int | None, int | None]:
    """The size in a JPEG's start-of-frame segment, found by walking the segments."""
    i, n = 2, len(data)
    while i + 9 <= n:
        if data[i] != 0xFF:
            return None, None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # segments with no length
            i += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None, None


def _webp_size(data: bytes) -> tuple[int | None, int | None]:
    kind = data[12:16]
    if kind == b"VP8X" and len(data) >= 30:
        w = 1 + int.from_bytes(data[24:27], "little")
        return w, 1 + int.from_bytes(data[27:30], "little")
    if kind == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8 " and len(data) >= 30:
        w = int.from_bytes(data[26:28], "little") & 0x3FFF
        return w, int.from_bytes(data[28:30], "little") & 0x3FFF
    return None, None


def image_part(
    data: bytes, *, name: str | None = None, what: str = "These bytes"
) -> dict[str, Any]:
    """Image bytes as a neutral image part; the media type is read from the bytes.
    Bytes that are no image the providers take are refused, saying what they begin
    with."""
    found = sniff(data)
    if found is None:
        raise ConfigurationError(
            f"{what} are not a PNG, JPEG, GIF or WebP image (they begin "
            f"{data[:8].hex(' ') or 'with nothing'}). Give the bytes of an image, or "
            "text as a str (e.g. data.decode())."
        )
    media, w, h = found
    part: dict[str, Any] = {
        "type": "image",
        "media_type": media,
        "data": base64.b64encode(data).decode("ascii"),
    }
    if w and h:
        part["width"], part["height"] = w, h
    if name:
        part["name"] = name
    return part


# -- figures and PIL images (their libraries are loaded already when one is given) ------


def _module(obj: Any) -> str:
    return type(obj).__module__ or ""


def is_figure(obj: Any) -> bool:
    """A matplotlib Figure (or an Axes, whose figure is meant), by its type only."""
    return _module(obj).startswith("matplotlib.") and (
        hasattr(obj, "savefig") or hasattr(getattr(obj, "figure", None), "savefig")
    )


def is_pil_image(obj: Any) -> bool:
    return (
        _module(obj).startswith("PIL.")
        and hasattr(obj, "save")
        and hasattr(obj, "mode")
    )


def figure_part(
    fig: Any, *, name: str | None = None, max_side: int = FIGURE_MAX_SIDE
) -> dict[str, Any]:
    """A matplotlib figure drawn as a PNG at its own dpi, or at the dpi that makes its
    long side ``max_side`` pixels if it would be larger (then ``drawn_from`` says the
    size it would have had). The PNG is encoded here from the drawn pixels, with no
    metadata, so one figure gives the same bytes on every machine (a recording or a
    cache matches it)."""
    import matplotlib  # the figure's own library: loaded already

    if not hasattr(fig, "savefig"):  # an Axes
        fig = fig.figure
    w_in, h_in = (float(x) for x in fig.get_size_inches())
    dpi = float(fig.dpi)
    full = (round(w_in * dpi), round(h_in * dpi))
    if max(full) > max_side:
        dpi = max_side / max(w_in, h_in)
    buf = io.BytesIO()
    with matplotlib.rc_context({"savefig.bbox": "standard"}):  # not "tight": its size
        fig.savefig(buf, format="rgba", dpi=dpi)
    raw = buf.getvalue()
    w, h = _dims(len(raw) // 4, w_in * dpi, h_in * dpi)
    part = image_part(png_encode(raw, w, h), name=name)
    if max(full) > max_side:
        part["drawn_from"] = list(full)
    return part


def _dims(pixels: int, w: float, h: float) -> tuple[int, int]:
    """The drawn width and height (Agg rounds the figure's size one way or the other)."""
    for cw in (round(w), int(w), int(w) + 1):
        if cw > 0 and pixels % cw == 0 and abs(pixels // cw - h) <= 1:
            return cw, pixels // cw
    raise ValueError(f"cannot tell the size of a {w:.1f}x{h:.1f} drawing")


def png_encode(rgba: bytes, width: int, height: int) -> bytes:
    """RGBA pixels (8 bits each) as a PNG, RGB when every pixel is opaque. Encoded with
    the standard library's zlib: the same pixels give the same bytes everywhere."""
    n = width * height
    if len(rgba) != 4 * n:
        raise ValueError(f"{len(rgba)} bytes are not {width}x{height} RGBA pixels")
    px: bytes | bytearray = rgba
    color, stride = 6, 4 * width
    if rgba[3::4] == b"\xff" * n:
        px = bytearray(3 * n)
        px[0::3], px[1::3], px[2::3] = rgba[0::4], rgba[1::4], rgba[2::4]
        color, stride = 2, 3 * width
    rows = b"".join(b"\x00" + px[i : i + stride] for i in range(0, len(px), stride))
    header = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    return (
        _PNG
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows, 6))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def pil_part(img: Any, *, name: str | None = None) -> dict[str, Any]:
    """A PIL image as it is (never resized): JPEG if it was read from a JPEG (quality
    90; a photo as PNG is several times larger), PNG otherwise."""
    buf = io.BytesIO()
    if getattr(img, "format", None) == "JPEG" and img.mode in ("L", "RGB"):
        img.save(buf, format="JPEG", quality=90)
    else:
        if img.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"):
            img = img.convert("RGBA" if "A" in img.mode else "RGB")
        img.save(buf, format="PNG")
    return image_part(buf.getvalue(), name=name)


# -- describing a part --------------------------------------------------------------------


def nbytes(part: dict[str, Any]) -> int | None:
    """The size of an image part's bytes (decoded), or ``None`` for a URL."""
    data = part.get("data")
    if not isinstance(data, str):
        return None
    return len(data) * 3 // 4 - (len(data) - len(data.rstrip("=")))


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.0f} KB"
    return f"{n / 1024 / 1024:.1f} MB"


def label(part: dict[str, Any]) -> str:
    """``fig: image/png 640x480, 42 KB`` — what a record or a view shows for an image."""
    media = part.get("media_type")
    out = media if isinstance(media, str) else "image"
    w, h = part.get("width"), part.get("height")
    if isinstance(w, int) and isinstance(h, int):
        out += f" {w}x{h}"
    n = nbytes(part)
    if n is not None:
        out += f", {_size(n)}"
    elif isinstance(part.get("url"), str):
        url = part["url"]
        out += f" at {url if len(url) <= 60 else url[:57] + '...'}"
    drawn = part.get("drawn_from")
    if isinstance(drawn, list) and len(drawn) == 2:
        out += f" (drawn down from {drawn[0]}x{drawn[1]})"
    name = part.get("name")
    return f"{name}: {out}" if isinstance(name, str) and name else out


def tokens(part: dict[str, Any]) -> int:
    """About what an image costs in input tokens: Anthropic's published rule, width x
    height / 750, after its scaling to 1568 px a side and about 1.15 megapixels (at
    most ~1,600); 1,000 when the size is unknown. OpenAI's tiles come to similar
    numbers. An estimate, as the readout says."""
    w, h = part.get("width"), part.get("height")
    if not isinstance(w, int) or not isinstance(h, int) or w < 1 or h < 1:
        return 1000
    scale: float = min(1.0, FIGURE_MAX_SIDE / max(w, h), math.sqrt(1_150_000 / (w * h)))
    return max(1, round(w * h * scale * scale / 750))


def without_image_data(
    messages: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], int]:
    """The messages with each neutral image's data left out, and the characters its
    tokens come to (4 a token, as the engine estimates text)."""
    out: list[dict[str, Any]] = []
    chars = 0
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if not isinstance(content, list):
            out.append(m)
            continue
        parts = []
        for p in content:
            if (
                isinstance(p, dict)
                and p.get("type") == "image"
                and isinstance(p.get("data"), str)
            ):
                chars += 4 * tokens(p)
                p = {k: v for k, v in p.items() if k != "data"}
            parts.append(p)
        out.append({**m, "content": parts})
    return out, chars


# -- thumbnails ---------------------------------------------------------------------------

_SMALL_ENOUGH = 48 * 1024  # without Pillow, an image this small is its own thumbnail


def thumbnail(
    part: dict[str, Any], side: int = THUMBNAIL_SIDE
) -> dict[str, Any] | None:
    """A small copy of an image part (``media_type``, ``data``, ``width``, ``height``)
    for a view, at most ``side`` pixels a side; ``None`` for a URL, bytes that are no
    image, or (without Pillow) an image too large to show as it is."""
    media, data = part.get("media_type"), part.get("data")
    if not isinstance(media, str) or not isinstance(data, str):
        return None
    made = _thumbnail(media, data, side)
    if made is None:
        return None
    media, data, w, h = made
    return {"media_type": media, "data": data, "width": w, "height": h}


@functools.lru_cache(maxsize=32)  # views ask again for every repaint
def _thumbnail(media: str, data: str, side: int) -> tuple[str, str, int, int] | None:
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        return None
    found = sniff(raw)
    if found is None:
        return None
    kind, w, h = found
    try:
        from PIL import Image
    except ImportError:
        if len(raw) <= _SMALL_ENOUGH and w and h:
            scale = min(1.0, side / max(w, h))
            return kind, data, max(1, round(w * scale)), max(1, round(h * scale))
        return None
    try:
        with Image.open(io.BytesIO(raw)) as im:
            im.thumbnail((side, side))
            small = im if im.mode in ("L", "RGB", "RGBA") else im.convert("RGBA")
            buf = io.BytesIO()
            if kind == "image/jpeg" and small.mode != "RGBA":
                small.save(buf, format="JPEG", quality=80)
            else:
                small.save(buf, format="PNG")
                kind = "image/png"
            tw, th = small.size
    except Exception:  # a damaged image, a decompression bomb: no thumbnail
        return None
    return kind, base64.b64encode(buf.getvalue()).decode("ascii"), tw, th
