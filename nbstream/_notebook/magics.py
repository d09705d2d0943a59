"""``%%chat`` and ``%chat``: ask a model from a notebook cell and watch the reply stream.

How a cell runs, by where it runs:

- **Jupyter, interactive** (JupyterLab, Notebook; the kernel runs the cell with
  ``allow_stdin=True``): an input transformer turns the ``%%chat`` cell into
  ``await nbstream.magics.run_chat(line, body)``, so the cell stays busy while the reply
  streams (Run All keeps its order) and the kernel still handles the Stop button. The
  reply streams into a ``ReplyView`` widget (deltas only, coalesced to 20 Hz); when it
  ends, the output is replaced by static HTML, rendered from the same Markdown by the
  same rules as the live view (``render.py``), which a saved notebook, nbconvert and
  GitHub show without a kernel.
- **Jupyter, batch** (nbclient, nbval, papermill: ``allow_stdin=False``): no widget, one
  final deterministic output (no timings in it).
- **Terminal IPython**: the reply streams to stdout; Ctrl-C stops it.
- ``--background``: the cell returns at once; the reply streams into its own output while
  other cells run. Stop it with its Stop button or ``%chat stop``.

Stop, the kernel's interrupt and ``%chat stop`` end a stream the same way: the HTTP
connection closes and the turn is ``cancelled``, its partial reply kept.

Configuration, lowest to highest: built-in default → environment (``NBSTREAM_*``,
``OPENAI_*``, ``ANTHROPIC_API_KEY``) → ``%config ChatMagics.<name> = …`` → cell option.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Bool, Float, Int, Unicode

from .._core.pricing import warm_up
from .._http import registry
from .._http.client import Client, Messages
from .cell_clients import ClientCache
from .cell_request import (
    CellRequest,
    Options,
    check_options,
    interpolate,
    parse_line,
    schema_from,
    tools_from,
    with_variables,
)
from .cell_run import CellRunner
from .chat_actions import print_action

__all__ = [
    "ChatMagics",
    "load_ipython_extension",
    "run_chat",
    "unload_ipython_extension",
]

Mode = Literal["interactive", "batch", "terminal"]


@magics_class
class ChatMagics(Magics):
    """The ``%%chat`` cell magic and ``%chat`` line magic. Configure with
    ``%config ChatMagics.model = "gpt-4o-mini"`` and the like."""

    model = Unicode(
        None,
        allow_none=True,
        help="Model name (default: NBSTREAM_MODEL, or the server's default).",
    ).tag(config=True)
    api = Unicode(
        None,
        allow_none=True,
        help="'openai' or 'anthropic' (default: NBSTREAM_API, or guessed from the keys set).",
    ).tag(config=True)
    base_url = Unicode(
        None,
        allow_none=True,
        help="Server base URL, e.g. http://127.0.0.1:8000/v1 (default: NBSTREAM_BASE_URL / OPENAI_BASE_URL, or the local model).",
    ).tag(config=True)
    system = Unicode(
        None, allow_none=True, help="System prompt for new conversations."
    ).tag(config=True)
    temperature = Float(
        None, allow_none=True, help="Sampling temperature (default: the server's)."
    ).tag(config=True)
    max_tokens = Int(
        None,
        allow_none=True,
        help="Maximum tokens of a reply (default: the server's; 4096 for Anthropic).",
    ).tag(config=True)
    timeout = Float(
        None,
        allow_none=True,
        help="Seconds to wait for the first byte and between pieces of a reply (default: 120 and 60).",
    ).tag(config=True)
    background = Bool(False, help="Return at once and stream in the background.").tag(
        config=True
    )
    max_steps = Int(
        None,
        allow_none=True,
        help="At most this many model steps in a tool loop (--tools; default 8).",
    ).tag(config=True)
    recover = Unicode(
        None,
        allow_none=True,
        help="How a fallback model takes over a reply that broke after it started: "
        "'restart', 'prefill' or 'user_turn' (default: keep the partial reply).",
    ).tag(config=True)
    context_budget = Int(
        None,
        allow_none=True,
        help="Tokens (estimated) that the variables of --with may take as text together, "
        "e.g. a DataFrame's schema, head and summary (default: the client's, 2000).",
    ).tag(config=True)
    allow_images = Bool(
        False,
        help="Show images in replies. Off: an image is a link to click (a remote image "
        "loads without a click, so a prompt-injected reply could send data out in its "
        "URL). Only http(s) images load even when on.",
    ).tag(config=True)
    cache = Unicode(
        None,
        allow_none=True,
        help="Path of the reply cache (an nbstream store, SQLite): a %%chat cell whose request is in it answers from it at once, marked cached. Default: NBSTREAM_CACHE; %chat cache on|off.",
    ).tag(config=True)

    def __init__(self, shell: InteractiveShell | None = None, **kw: Any) -> None:
        super().__init__(shell=shell, **kw)
        # the clients of recent settings (older ones closed; a conversation that still
        # holds one reopens its pool if used)
        self._clients = ClientCache()
        self.runner = CellRunner(self)

    # -- the magics -----------------------------------------------------------------
    @magic_arguments()
    @argument(
        "-m",
        "--model",
        help="Model name; several, comma-separated, are tried in order (fallbacks).",
    )
    @argument(
        "--recover",
        choices=["restart", "prefill", "user_turn"],
        help="When a reply breaks after it started: how the next model takes over.",
    )
    @argument(
        "-a", "--api", help="'openai' (chat completions) or 'anthropic' (messages)."
    )
    @argument("-u", "--base-url", dest="base_url", help="Server base URL (…/v1).")
    @argument("-s", "--system", help="System prompt (kept for the conversation).")
    @argument("-t", "--temperature", type=float, help="Sampling temperature.")
    @argument("--max-tokens", dest="max_tokens", type=int, help="Maximum reply tokens.")
    @argument("--timeout", type=float, help="First-byte and idle timeout in seconds.")
    @argument(
        "-c", "--conversation", help="Name of the conversation (default: 'default')."
    )
    @argument("-o", "--output", help="Store the Turn in this variable.")
    @argument(
        "-i",
        "--interpolate",
        action="store_true",
        help="Fill {name} from the notebook's variables.",
    )
    @argument("--new", action="store_true", help="Start a fresh conversation.")
    @argument(
        "-b",
        "--background",
        action="store_true",
        help="Return at once; stream in the background.",
    )
    @argument(
        "--tools",
        help="Python functions the model may call: names from the notebook, "
        "comma-separated (e.g. --tools lookup,plot_sales).",
    )
    @argument(
        "--approve",
        action="store_true",
        help="Ask before each tool call (Approve / Deny in the output).",
    )
    @argument(
        "--tool-choice",
        dest="tool_choice",
        help="auto, required, none, or a tool's name (for the first step).",
    )
    @argument(
        "--max-steps",
        dest="max_steps",
        type=int,
        help="At most this many model steps in a tool loop (default 8).",
    )
    @argument(
        "--with",
        dest="with_names",
        metavar="NAMES",
        help="Notebook variables to send after the text, comma-separated: a DataFrame "
        "as its schema, head and summary, a figure or image as an image, others as text.",
    )
    @argument("--record", help="Append this exchange to a recording file (JSON Lines).")
    @argument(
        "--replay",
        help="Answer from a recording file or folder instead of the network.",
    )
    @argument(
        "--schema",
        help="Ask for JSON of this shape (response_format=): the name of a pydantic "
        "model or a JSON schema (a dict) in the notebook.",
    )
    @cell_magic
    def chat(self, line: str, cell: str) -> None:
        """Send the cell to the model; the reply streams into the output.

        Usage: ``%%chat [-m MODEL] [-s SYSTEM] [-c NAME] [-o VAR] [-i] [--new] …``
        """
        request = self.prepare(line, cell)
        mode = self.mode()
        # Reached without the input transformer (terminal IPython, or run_cell_magic in
        # a kernel, whose loop is busy with this very call): stream synchronously.
        self.runner.run_sync(request, "sync-kernel" if mode == "interactive" else mode)

    @magic_arguments()
    @argument(
        "action",
        nargs="?",
        default="help",
        help="history | clear | config | stop | list | help",
    )
    @argument(
        "name",
        nargs="?",
        default=None,
        help="Conversation name (history, clear); on or off (cache).",
    )
    @argument("path", nargs="?", default=None, help="cache on: the cache file.")
    @line_magic("chat")  # type: ignore[arg-type]  # IPython types the name oddly
    def chat_line(self, line: str) -> None:
        """``%chat history [NAME]`` · ``%chat clear [NAME]`` · ``%chat config`` ·
        ``%chat stop`` · ``%chat list`` · ``%chat cache on [PATH]|off``"""
        print_action(self, parse_line(self.chat_line, line))

    def cache_path(self) -> str | None:
        if self.cache is not None:
            return self.cache or None
        return os.environ.get("NBSTREAM_CACHE") or None

    # -- preparing a request ------------------------------------------------------------
    def options(self, line: str) -> Options:
        return check_options(parse_line(self.chat, line))

    def prepare(self, line: str, cell: str) -> CellRequest:
        opts = self.options(line)
        body = cell.strip()
        if not body:
            raise UsageError(
                "The %%chat cell is empty: write your message on the lines below %%chat."
            )
        if opts.interpolate:
            body = interpolate(self._ns(), body)
        client = self.client_for(opts)
        name = opts.conversation or registry.DEFAULT
        if opts.new:
            conv = registry.new_conversation(name, system=self.system)
        else:
            conv = registry.conversation(name)
            if conv.system is None and not conv.transcript and self.system:
                conv.system = self.system
        if opts.system is not None:
            conv.system = opts.system
        conv.client = client
        params: dict[str, Any] = {}
        temperature = (
            opts.temperature if opts.temperature is not None else self.temperature
        )
        if temperature is not None:
            params["temperature"] = temperature
        max_tokens = opts.max_tokens if opts.max_tokens is not None else self.max_tokens
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        if opts.schema is not None:
            params["response_format"] = schema_from(self._ns(), opts.schema)
        background = opts.background or self.background
        tools = tools_from(self._ns(), opts)
        if tools:
            params["tools"] = tools
            params["max_steps"] = opts.max_steps or self.max_steps
            if opts.tool_choice is not None:
                names = [t.name for t in tools]
                if opts.tool_choice not in ("auto", "required", "none", *names):
                    raise UsageError(
                        f"--tool-choice {opts.tool_choice!r} is not a choice: use "
                        f"auto, required, none or a tool's name ({', '.join(names)})."
                    )
                params["tool_choice"] = opts.tool_choice
        elif opts.approve or opts.max_steps is not None or opts.tool_choice:
            raise UsageError(
                "--approve, --max-steps and --tool-choice go with --tools NAMES (the "
                "functions the model may call)."
            )
        if opts.approve and self.mode() == "batch":
            raise UsageError(
                "--approve needs someone to answer: run the cell in JupyterLab, "
                "Notebook or a terminal. A batch run (nbclient, nbval, papermill) "
                "cannot ask; leave --approve out there."
            )
        message: Messages = body
        if opts.with_names is not None:
            message = with_variables(
                self._ns(), body, opts.with_names, self.context_budget, client
            )
        return CellRequest(conv, message, params, opts.output, background, opts.approve)

    def client_for(self, opts: Options) -> Client:
        return self._clients.get(self, opts)

    def _ns(self) -> Mapping[str, Any]:
        return self.shell.user_ns if self.shell is not None else {}

    def mode(self) -> Mode:
        kernel = getattr(self.shell, "kernel", None)
        if kernel is None:
            return "terminal"
        return "interactive" if getattr(kernel, "_allow_stdin", False) else "batch"

    async def run(self, line: str, cell: str) -> None:
        await self.runner.run(line, cell)

    def close_clients(self) -> None:
        self._clients.close()

    def stop_all(self) -> int:
        return self.runner.stop_all()


# -- the extension --------------------------------------------------------------------

_magics: ChatMagics | None = None


async def run_chat(line: str, cell: str) -> None:
    """What a ``%%chat`` cell becomes in a Jupyter kernel (see the module docstring)."""
    if _magics is None:
        raise UsageError("nbstream is not loaded: run %load_ext nbstream first.")
    await _magics.run(line, cell)


def _transform(lines: list[str]) -> list[str]:
    if not lines:
        return lines
    first = lines[0]
    if not first.startswith("%%chat") or first[6:7] not in ("", " ", "\t", "\n", "\r"):
        return lines
    line = first[6:].strip()
    body = "".join(lines[1:])
    return [
        f"await __import__('nbstream._notebook.magics', fromlist=['_']).run_chat({line!r}, {body!r})\n"
    ]


def load_ipython_extension(ip: InteractiveShell) -> None:
    global _magics
    _magics = ChatMagics(shell=ip)
    ip.register_magics(_magics)
    warm_up()  # the price dataset loads on a thread while the first cell is typed
    if (
        getattr(ip, "kernel", None) is not None
        and _transform not in ip.input_transformers_cleanup
    ):
        ip.input_transformers_cleanup.append(_transform)


def unload_ipython_extension(ip: InteractiveShell) -> None:
    global _magics
    if _transform in ip.input_transformers_cleanup:
        ip.input_transformers_cleanup.remove(_transform)
    if _magics is not None:
        _magics.stop_all()
        _magics.close_clients()
    _magics = None
