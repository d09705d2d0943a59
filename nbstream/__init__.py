"""nbstream: stream LLM replies live into Jupyter, and keep every turn as data.

>>> from nbstream import Client, Conversation, Transcript
>>> client = Client(base_url="http://127.0.0.1:8000/v1", model="m")
>>> conv = Conversation(client, system="You are terse.")
>>> len(conv.transcript)
0
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import middleware as middleware  # nbstream.middleware.Logging(), RateLimit(…)
from ._core.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    ConfigurationError,
    EventTooLargeError,
    ImageTooLargeError,
    InternalError,
    NbstreamError,
    NotAStreamError,
    ProviderStreamError,
)
from ._core.events import (
    Done,
    ErrorEvent,
    Event,
    Finish,
    Meta,
    ReasoningDelta,
    RefusalDelta,
    StepStart,
    StreamWarning,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolRun,
    Usage,
    UsageEvent,
)
from ._core.pricing import Cost
from ._core.toolresult import ToolResult
from ._core.transcript import (
    Choice,
    ErrorInfo,
    Metrics,
    Request,
    ToolCall,
    Transcript,
    Turn,
)
from ._http.client import Client
from ._http.conversation import Conversation
from ._http.registry import conversation, conversations, new_conversation
from ._http.settings import Timeouts
from ._http.streams import AsyncStream, Stream

if TYPE_CHECKING:
    from ._batch.api import batch
    from ._batch.job import Job
    from ._core.tools import Tool, as_tool
    from ._notebook.widget import ChatWidget

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The widget stack (ipywidgets, anywidget) loads only when ChatWidget is used.
    if name == "ChatWidget":
        from ._notebook.widget import ChatWidget

        return ChatWidget
    if name in ("Tool", "as_tool"):  # pydantic loads only when tools are used
        from ._core import tools

        return getattr(tools, name)
    # Batch runs (sqlite3, the job machinery) load only when used.
    if name == "batch":
        from ._batch.api import batch

        return batch
    if name == "Job":
        from ._batch.job import Job

        return Job
    raise AttributeError(f"module 'nbstream' has no attribute {name!r}")


def load_ipython_extension(ip: Any) -> None:
    """``%load_ext nbstream``: registers ``%%chat`` and ``%chat``."""
    from ._notebook.magics import load_ipython_extension as load

    load(ip)


def unload_ipython_extension(ip: Any) -> None:
    from ._notebook.magics import unload_ipython_extension as unload

    unload(ip)


__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncStream",
    "ChatWidget",
    "Choice",
    "Client",
    "ConfigurationError",
    "Conversation",
    "Cost",
    "Done",
    "ErrorEvent",
    "ErrorInfo",
    "Event",
    "EventTooLargeError",
    "Finish",
    "ImageTooLargeError",
    "InternalError",
    "Job",
    "Meta",
    "Metrics",
    "NbstreamError",
    "NotAStreamError",
    "ProviderStreamError",
    "ReasoningDelta",
    "RefusalDelta",
    "Request",
    "StepStart",
    "Stream",
    "StreamWarning",
    "TextDelta",
    "Timeouts",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallEnd",
    "ToolResult",
    "ToolRun",
    "Transcript",
    "Turn",
    "Usage",
    "UsageEvent",
    "__version__",
    "as_tool",
    "batch",
    "conversation",
    "conversations",
    "load_ipython_extension",
    "new_conversation",
    "unload_ipython_extension",
]
