"""Each provider's documented limits on images, and a request fitted to them before
anything is sent. Pure functions.

The limits, from the providers' vision guides (read 2026-05):

- **OpenAI** ("Image input requirements"): up to 20 MB an image, 50 MB of images in one
  request, 500 images in one request. No limit in pixels: the server scales a large
  image down (to fit 2048x2048, then 768 px on the short side).
- **Anthropic** ("General limits"): up to 5 MB an image (the API measures the base64
  text: "image exceeds 5 MB maximum"), 8000x8000 px, or 2000x2000 px when a request has
  more than 20 images; 100 images in one request (600 for models with more than 200k
  tokens of context: the lower number is kept); 32 MB a request.

Every OpenAI-compatible server (vLLM, llama.cpp, Ollama …) is held to OpenAI's limits:
its API is the one documented.

A new image over a limit is refused (``ImageTooLargeError``, naming the limit). Images
of earlier turns are sent again with the history while the request stays within the
limits; when it would not, the oldest are left out of that request (replaced by a line
saying so: the record keeps them), so a conversation never gets stuck on its past.

>>> LIMITS["anthropic"].max_bytes
5242880
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ImageTooLargeError
from .images import label
from .messages import image

__all__ = ["LIMITS", "Limits", "fit_images"]

MB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    provider: str
    max_bytes: int  # one image
    counts_base64: bool  # sizes measured on the base64 text (else the image's bytes)
    max_images: int  # in one request
    max_total: int  # all images of one request, measured the same way
    max_side: int | None = None
    many: int | None = None  # with more images than this in one request …
    many_side: int | None = None  # … each side at most this


LIMITS: dict[str, Limits] = {
    "openai": Limits("OpenAI", 20 * MB, False, 500, 50 * MB),
    "anthropic": Limits("Anthropic", 5 * MB, True, 100, 32 * MB, 8000, 20, 2000),
}


def _mb(n: int) -> str:
    return f"{n / MB:g} MB"


@dataclass
class _Image:
    part: dict[str, Any]
    size: int  # as the provider counts it
    side: int | None  # the longer side, if known

    @classmethod
    def of(cls, part: dict[str, Any], lim: Limits) -> _Image:
        data = part.get("data")
        size = 0
        if isinstance(data, str):
            size = len(data) if lim.counts_base64 else len(data) * 3 // 4
        w, h = part.get("width"), part.get("height")
        side = max(w, h) if isinstance(w, int) and isinstance(h, int) else None
        return cls(part, size, side)


def _alone(img: _Image, lim: Limits) -> str | None:
    """Why this image alone is over the limits, or None."""
    if img.size > lim.max_bytes:
        what = "base64 text" if lim.counts_base64 else "bytes"
        return f"{_mb(lim.max_bytes)} an image (its {what}: {_mb(img.size)})"
    if lim.max_side is not None and img.side is not None and img.side > lim.max_side:
        return f"{lim.max_side}x{lim.max_side} px an image"
    return None


def _found(messages: list[dict[str, Any]], lim: Limits) -> list[_Image]:
    return [
        _Image.of(p, lim)
        for m in messages
        if isinstance(m, dict) and isinstance(m.get("content"), list)
        for p in m["content"]
        if isinstance(p, dict) and image(p) is not None
    ]


def _refuse(what: str, limit: str, lim: Limits, api: str, fix: str) -> None:
    raise ImageTooLargeError(
        f"{what} is over {lim.provider}'s limit of {limit}, so nothing was sent. {fix}",
        limit=limit,
        api=api,
    )


_SHRINK = (
    "Make it smaller first (with PIL: img.thumbnail((1568, 1568)), or save it as a "
    "JPEG); a matplotlib figure is drawn at most 1568 px wide by itself."
)


def fit_images(
    history: list[dict[str, Any]], new: list[dict[str, Any]], api: str
) -> list[dict[str, Any]]:
    """``history + new`` within ``api``'s image limits: a new image over a limit is
    refused; history images are left out, oldest first, while the whole would not fit.
    The messages given are not changed (a message with an image left out is a copy)."""
    lim = LIMITS.get(api)
    fresh = _found(new, lim) if lim else []
    past = _found(history, lim) if lim else []
    if lim is None or not (fresh or past):
        return history + new
    for img in fresh:
        over = _alone(img, lim)
        if over is not None:
            what = f"The image {label(img.part)}"
            _refuse(what, over, lim, api, _SHRINK)
    count, total = len(fresh), sum(i.size for i in fresh)
    side = max((i.side or 0 for i in fresh), default=0)
    if count > lim.max_images:
        _refuse(
            f"This message's {count} images",
            f"{lim.max_images} images a request",
            lim,
            api,
            "Send them in several messages.",
        )
    if total > lim.max_total:
        _refuse(
            f"This message's images ({_mb(total)} together)",
            f"{_mb(lim.max_total)} of images a request",
            lim,
            api,
            "Send fewer or smaller images. " + _SHRINK,
        )
    if (
        lim.many is not None
        and lim.many_side
        and count > lim.many
        and side > lim.many_side
    ):
        _refuse(
            f"This message's {count} images, one {side} px on a side,",
            f"{lim.many_side}x{lim.many_side} px an image when a request has more "
            f"than {lim.many} images",
            lim,
            api,
            f"Send at most {lim.many} images at once, or smaller ones.",
        )
    left_out: dict[int, str] = {}  # id(part) -> why
    for img in reversed(past):  # the newest earlier images are kept first
        why = _alone(img, lim)
        if why is None and count + 1 > lim.max_images:
            why = f"{lim.provider} takes {lim.max_images} images a request"
        if why is None and total + img.size > lim.max_total:
            why = f"{lim.provider} takes {_mb(lim.max_total)} of images a request"
        big = max(side, img.side or 0)
        many = lim.many is not None and count + 1 > lim.many
        if why is None and many and lim.many_side and big > lim.many_side:
            why = (
                f"{lim.provider} takes images over {lim.many_side} px only in "
                f"requests of at most {lim.many} images"
            )
        if why is not None:
            left_out[id(img.part)] = why
            continue
        count, total, side = count + 1, total + img.size, big
    if not left_out:
        return history + new
    return [_without(m, left_out) for m in history] + new


def _without(m: dict[str, Any], left_out: dict[int, str]) -> dict[str, Any]:
    content = m.get("content")
    if not isinstance(content, list) or not any(id(p) in left_out for p in content):
        return m
    parts = [
        {
            "type": "text",
            "text": f"[{label(p)}: sent earlier, left out of this request "
            f"({left_out[id(p)]})]",
        }
        if id(p) in left_out
        else p
        for p in content
    ]
    return {**m, "content": parts}
