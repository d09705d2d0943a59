"""What ``ChatWidget`` sends the browser about messages: a turn as an assistant
message (``message_of``) and as the user message that asked it (``user_message_of``),
and a change of the message list (``changes``). Plain data, no I/O."""

from __future__ import annotations

from typing import Any

from .._core.messages import text_of
from .._core.transcript import Turn
from .readout import readout
from .render import takeovers
from .sent import sent_images
from .toolblocks import loop_view

__all__ = ["changes", "message_of", "user_message_of"]


def message_of(turn: Turn) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "id": turn.id,
        "role": "assistant",
        "text": turn.text,
        "reasoning": turn.reasoning,
        "status": turn.status,
        "readout": readout(turn),
        "error": turn.error.message if turn.error else "",
    }
    if turn._steps or turn.request.tools:  # a tool loop: every step, and its calls
        msg["text"], msg["tools"] = loop_view(turn)
    if len(turn.attempts) > 1:  # another model took over: how, and what it replaced
        msg["notes"], msg["superseded"] = takeovers(turn)
    if turn.structured is not None:  # response_format=: drawn as a table or tree
        msg["structured"] = True
        msg["parse_error"] = turn.parse_error or ""
    return msg


def user_message_of(turn: Turn) -> dict[str, Any]:
    content = turn.request.messages[-1].get("content") if turn.request.messages else ""
    msg: dict[str, Any] = {
        "id": f"{turn.id}-user",
        "role": "user",
        "text": str(content) if not isinstance(content, list) else text_of(content),
        "turn": turn.id,
    }
    if images := sent_images(content):  # thumbnails made here, from the data sent
        msg["images"] = images
    return msg


def changes(
    base: int, rev: int, count: int, upsert: list[dict[str, Any]]
) -> dict[str, Any]:
    """Applied on top of revision ``base``, ``upsert`` (replace by id, else append)
    makes revision ``rev``, of ``count`` messages."""
    return {
        "type": "messages",
        "base": base,
        "rev": rev,
        "count": count,
        "upsert": upsert,
    }
