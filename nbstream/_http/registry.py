"""Named conversations of this Python session, shared by the magic and the user.

>>> conv = conversation("demo")
>>> conversation("demo") is conv
True
"""

from __future__ import annotations

from .conversation import Conversation

__all__ = ["DEFAULT", "conversation", "conversations", "new_conversation"]

DEFAULT = "default"
_conversations: dict[str, Conversation] = {}


def conversations() -> dict[str, Conversation]:
    """Every named conversation of this session (the live mapping)."""
    return _conversations


def conversation(name: str | None = None) -> Conversation:
    """The conversation called ``name`` (``None``: the default one), created if new.

    Its ``.transcript`` holds every turn, finished, stopped or failed.
    """
    key = name or DEFAULT
    conv = _conversations.get(key)
    if conv is None:
        conv = _conversations[key] = Conversation()
    return conv


def new_conversation(
    name: str | None = None, *, system: str | None = None
) -> Conversation:
    """Start ``name`` afresh; the old one stays reachable only if you kept it."""
    conv = _conversations[name or DEFAULT] = Conversation(system=system)
    return conv
