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

import asyncio
import contextlib
import os
import shlex
import string
import sys
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display
from markdown_it.common.utils import escapeHtml
from traitlets import Bool, Float, Int, Unicode

from .._core.context import Named, as_messages
from .._core.errors import ConfigurationError, NbstreamError
from .._core.events import AttemptStart, Event, TextDelta, ToolRun
from .._core.messages import summary
from .._core.pricing import warm_up
from .._core.transcript import Turn
from .._http import registry
from .._http.client import Client, Messages
from .._http.conversation import Conversation
from .._http.replay import ReplayError
from .._http.settings import Timeouts, resolve
from .._http.streams import AsyncStream, Stream
from .coalesce import Coalescer
from .render import final_bundle, message_html, readout_text, reply_html, wrap_html
from .render import readout as readout_of
from .toolblocks import Approvals, ToolFeed
from .toolview import tool_line
from .totals import totals, totals_text

__all__ = [
    "ChatMagics",
    "load_ipython_extension",
    "run_chat",
    "unload_ipython_extension",
]

Mode = Literal["interactive", "batch", "terminal"]
MAX_CLIENTS = 8  # clients (connection pools) kept for recently used settings
DEFAULT_CACHE = "nbstream-cache.sqlite"  # %chat cache on, with no path and no env
_ENV = ("NBSTREAM_", "OPENAI_", "ANTHROPIC_", "XDG_CACHE_HOME")


@dataclass
class _Options:
    model: str | None
    api: str | None
    base_url: str | None
    system: str | None
    temperature: float | None
    max_tokens: int | None
    timeout: float | None
    conversation: str | None
    output: str | None
    interpolate: bool
    new: bool
    background: bool
    record: str | None
    replay: str | None
    recover: str | None
    tools: str | None
    approve: bool
    max_steps: int | None
    tool_choice: str | None
    with_names: str | None


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
        # the clients of recent settings, most recently used last; older ones are
        # closed (a conversation that still holds one reopens its pool if used)
        self._clients: OrderedDict[tuple[Any, ...], Client] = OrderedDict()
        self.running: set[AsyncStream | Stream] = set()
        self.tasks: set[asyncio.Task[None]] = set()

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
    @cell_magic
    def chat(self, line: str, cell: str) -> None:
        """Send the cell to the model; the reply streams into the output.

        Usage: ``%%chat [-m MODEL] [-s SYSTEM] [-c NAME] [-o VAR] [-i] [--new] …``
        """
        request = self.prepare(line, cell)
        mode = self.mode()
        # Reached without the input transformer (terminal IPython, or run_cell_magic in
        # a kernel, whose loop is busy with this very call): stream synchronously.
        self._run_sync(request, "sync-kernel" if mode == "interactive" else mode)

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
        args = _parse(self.chat_line, line)
        action = args.action
        if action == "history":
            conv = registry.conversation(args.name)
            display(
                {
                    "text/html": _history_html(conv, self.allow_images),
                    "text/plain": _history_text(conv),
                },
                raw=True,
            )
        elif action == "clear":
            registry.conversation(args.name).transcript.clear()
            print(f"Cleared conversation {args.name or registry.DEFAULT!r}.")
        elif action == "config":
            print(self.config_text())
        elif action == "stop":
            n = self.stop_all()
            print(f"Stopped {n} running {'reply' if n == 1 else 'replies'}.")
        elif action == "list":
            for name, conv in registry.conversations().items():
                print(f"{name}: {conv.transcript!r}")
        elif action == "cache":
            print(self.cache_action(args.name, args.path))
        elif action == "help":
            print(_HELP)
        else:
            raise UsageError(f"%chat {action!r} is not an action. {_HELP}")

    def cache_action(self, switch: str | None, path: str | None) -> str:
        """``%chat cache on [PATH]`` / ``off`` / (nothing: say which cache is used)."""
        if switch == "on":
            self.cache = path or os.environ.get("NBSTREAM_CACHE") or DEFAULT_CACHE
        elif switch == "off":
            self.cache = ""  # off, even when NBSTREAM_CACHE is set
        elif switch is not None:
            raise UsageError(
                f"%chat cache {switch!r}: use `%chat cache on [PATH]` or "
                "`%chat cache off`."
            )
        where = self.cache_path()
        if where is None:
            return "The reply cache is off."
        try:
            self.client_for(self.options(""))  # opens (and checks) the file now
        except UsageError as exc:
            self.cache = ""
            raise UsageError(f"The reply cache cannot be used: {exc}") from None
        return (
            f"The reply cache is on: {where}. A %%chat cell already answered there "
            "is answered from it at once, marked cached."
        )

    def cache_path(self) -> str | None:
        if self.cache is not None:
            return self.cache or None
        return os.environ.get("NBSTREAM_CACHE") or None

    # -- preparing a request ------------------------------------------------------------
    def options(self, line: str) -> _Options:
        args = _parse(self.chat, line)
        opts = _Options(**{f: getattr(args, f) for f in _Options.__dataclass_fields__})
        if opts.temperature is not None and not 0 <= opts.temperature <= 2:
            raise UsageError(
                f"-t/--temperature {opts.temperature} is out of range: use a value from 0 to 2."
            )
        if opts.max_tokens is not None and opts.max_tokens < 1:
            raise UsageError(
                f"--max-tokens {opts.max_tokens} must be a positive whole number, e.g. --max-tokens 256."
            )
        if opts.timeout is not None and opts.timeout <= 0:
            raise UsageError(
                f"--timeout {opts.timeout} must be a positive number of seconds, e.g. --timeout 30."
            )
        if opts.max_steps is not None and opts.max_steps < 1:
            raise UsageError(
                f"--max-steps {opts.max_steps} must be at least 1, e.g. --max-steps 8."
            )
        if opts.output is not None and not opts.output.isidentifier():
            raise UsageError(
                f"-o {opts.output!r} is not a valid variable name: use letters, digits and _, e.g. -o reply."
            )
        return opts

    def prepare(self, line: str, cell: str) -> _Request:
        opts = self.options(line)
        body = cell.strip()
        if not body:
            raise UsageError(
                "The %%chat cell is empty: write your message on the lines below %%chat."
            )
        if opts.interpolate:
            body = self._interpolate(body)
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
        background = opts.background or self.background
        tools = self._tools(opts)
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
            message = self._with(body, opts.with_names, client)
        return _Request(conv, message, params, opts.output, background, opts.approve)

    def _tools(self, opts: _Options) -> list[Any]:
        """The functions named by ``--tools``, from the notebook's namespace."""
        if not opts.tools:
            return []
        ns = self.shell.user_ns if self.shell is not None else {}
        names = [n.strip() for n in opts.tools.split(",")]
        if not all(names):
            raise UsageError(
                f"--tools {opts.tools!r} has an empty name: list functions separated "
                "by commas, e.g. --tools lookup,plot_sales."
            )
        fns = []
        for name in names:
            if name not in ns:
                raise UsageError(
                    f"--tools: {name!r} is not defined in the notebook. Define the "
                    "function (run its cell), or leave it out of --tools."
                )
            if not callable(ns[name]):
                raise UsageError(
                    f"--tools: {name!r} is a {type(ns[name]).__name__}, not a function."
                )
            fns.append(ns[name])
        from .._core.tools import as_tools

        try:
            return list(as_tools(fns))
        except ConfigurationError as exc:
            raise UsageError(f"--tools: {exc}") from None

    def _with(self, body: str, names: str, client: Client) -> Messages:
        """``--with df,fig``: the cell's text, then each variable, as one message."""
        wanted = [n.strip() for n in names.split(",")]
        if not all(wanted):
            raise UsageError(
                f"--with {names!r} has an empty name: list variables separated by "
                "commas, e.g. --with df,fig."
            )
        ns = self.shell.user_ns if self.shell is not None else {}
        missing = [n for n in wanted if n not in ns]
        if missing:
            raise UsageError(
                f"--with: {', '.join(map(repr, missing))} "
                f"{'is not a variable' if len(missing) == 1 else 'are not variables'} "
                "in the notebook. Define it first (run its cell), or leave it out of "
                "--with."
            )
        budget = self.context_budget
        if budget is None:
            budget = client.context_budget
        elif budget < 1:
            raise UsageError(
                f"ChatMagics.context_budget = {budget} is not a number of tokens: use "
                "a positive whole number, e.g. %config ChatMagics.context_budget = 2000"
            )
        try:
            return as_messages([body, *(Named(n, ns[n]) for n in wanted)], budget)
        except ConfigurationError as exc:  # e.g. bytes that are no image
            raise UsageError(f"--with: {exc}") from None

    def client_for(self, opts: _Options) -> Client:
        base_url = opts.base_url or self.base_url
        models = [m.strip() for m in (opts.model or self.model or "").split(",")]
        if len(models) > 1 and not all(models):
            raise UsageError(
                f"-m {opts.model!r} has an empty model name: list models separated by "
                "commas, e.g. -m gpt-4o-mini,llama3."
            )
        model, fallbacks = (models[0] or None), models[1:]
        recover = opts.recover or self.recover
        api = opts.api or self.api
        timeout = opts.timeout if opts.timeout is not None else self.timeout
        # %env changes between cells count too (a hash: no key kept in plain text here)
        env = hash(
            tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV)))
        )
        cache = self.cache_path()
        key = (
            base_url,
            model,
            tuple(fallbacks),
            recover,
            api,
            timeout,
            opts.record,
            opts.replay,
            cache,
            env,
        )
        client = self._clients.get(key)
        if client is not None:
            self._clients.move_to_end(key)
        else:
            try:
                client = Client(
                    base_url=base_url,
                    model=model,
                    api=api,
                    timeout=Timeouts(first_byte=timeout, idle=timeout)
                    if timeout
                    else None,
                    record=opts.record,
                    replay=opts.replay,
                    fallbacks=fallbacks,
                    recover=recover,
                    cache=cache or False,
                )
            except (ConfigurationError, ReplayError) as exc:
                raise UsageError(str(exc)) from None
            self._clients[key] = client
            while len(self._clients) > MAX_CLIENTS:
                _, old = self._clients.popitem(last=False)
                old.close()
        return client

    def _interpolate(self, body: str) -> str:
        ns = self.shell.user_ns if self.shell is not None else {}
        try:
            return string.Formatter().vformat(body, (), _Namespace(ns))
        except KeyError as exc:
            raise UsageError(
                f"-i: {{{exc.args[0]}}} is not a variable in the notebook. Define it, or "
                "drop -i to send the braces as they are."
            ) from None
        except (ValueError, IndexError, AttributeError) as exc:
            raise UsageError(
                f"-i: the message has braces that are not a {{name}} ({exc}). Double them "
                "({{ and }}) to send them as they are, or drop -i."
            ) from None

    def mode(self) -> Mode:
        kernel = getattr(self.shell, "kernel", None)
        if kernel is None:
            return "terminal"
        return "interactive" if getattr(kernel, "_allow_stdin", False) else "batch"

    # -- running ----------------------------------------------------------------------
    async def run(self, line: str, cell: str) -> None:
        request = self.prepare(line, cell)
        mode = self.mode()
        if mode == "terminal":
            self._run_sync(request, mode)
            return
        if request.background and mode == "interactive":
            self._start_background(request)
            return
        await self._run_async(request, mode)

    def _start_background(self, request: _Request) -> None:
        approvals = Approvals() if request.approve else None
        stream = request.conv.astream(
            request.message, **request.stream_params(approvals)
        )
        view = _LiveOutput(stream, self.allow_images, approvals)

        async def go() -> None:
            # an error or a stop shows in the cell's output, and stays in the transcript
            with contextlib.suppress(NbstreamError, asyncio.CancelledError):
                await self._consume(stream, view, request)

        task = asyncio.get_running_loop().create_task(go())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run_async(self, request: _Request, mode: Mode) -> None:
        approvals = Approvals() if request.approve else None
        stream = request.conv.astream(
            request.message, **request.stream_params(approvals)
        )
        interactive = mode == "interactive"
        view = (
            _LiveOutput(stream, self.allow_images, approvals) if interactive else None
        )
        ticker = asyncio.get_running_loop().create_task(_keep_loop_awake())
        try:
            await self._consume(stream, view, request)
        except asyncio.CancelledError:
            # The kernel's interrupt button: the reply is stopped and kept; say so.
            raise KeyboardInterrupt(
                "the reply was stopped; its partial text is kept"
            ) from None
        finally:
            ticker.cancel()

    async def _consume(
        self, stream: AsyncStream, view: _LiveOutput | None, request: _Request
    ) -> None:
        self.running.add(stream)
        try:
            async with stream:
                async for ev in stream:
                    if view is not None:
                        view.add(ev)
        finally:
            self.running.discard(stream)
            self._finish(stream.turn, view, request)

    def _run_sync(self, request: _Request, mode: str) -> None:
        # no widget message is handled while this cell runs synchronously: ask on stdin
        stream = request.conv.stream(request.message, **request.stream_params(None))
        live = mode == "sync-kernel"
        view = _LiveOutput(stream, self.allow_images) if live else None
        self.running.add(stream)
        interrupted = False
        try:
            with stream:
                for ev in stream:
                    if view is not None:
                        view.add(ev)
                    elif mode == "terminal":
                        said = _terminal_text(ev)
                        if said:
                            sys.stdout.write(said)
                            sys.stdout.flush()
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            self.running.discard(stream)
            if mode == "terminal":
                turn = stream.turn
                if interrupted or turn.status == "cancelled":
                    sys.stdout.write("\n[stopped: the partial reply is kept]")
                sys.stdout.write(f"\n[{readout_text(readout_of(turn))}]\n")
                sys.stdout.flush()
                self._store(request, turn)
            else:
                self._finish(stream.turn, view, request)

    def _finish(self, turn: Turn, view: _LiveOutput | None, request: _Request) -> None:
        self._store(request, turn)
        if view is not None:
            view.finish(turn)
        else:
            display(_batch_bundle(turn, self.allow_images), raw=True)

    def _store(self, request: _Request, turn: Turn) -> None:
        if request.output and self.shell is not None:
            self.shell.user_ns[request.output] = turn

    def close_clients(self) -> None:
        while self._clients:
            _, client = self._clients.popitem()
            client.close()

    def stop_all(self) -> int:
        running = list(self.running)
        for s in running:
            s.cancel()
        return len(running)

    def config_text(self) -> str:
        opts = self.options("")
        try:
            client = self.client_for(opts)
        except UsageError as exc:
            return f"The configuration is not usable: {exc}"
        s = client.settings
        env = resolve()
        key_where = "set" if s.api_key else "not set (fine for local servers)"
        lines = [
            "nbstream %%chat configuration (cell options override these):",
            f"  api       {s.api}",
            f"  base_url  {s.base_url}   (from {s.source if self.base_url is None else '%config ChatMagics.base_url'})",
            f"  model     {s.model}",
            f"  api key   {key_where}",
            f"  system    {self.system!r}",
            f"  temperature {self.temperature}, max_tokens {self.max_tokens}, timeout {self.timeout}, background {self.background}",
            f"  cache     {client.cache or 'off'}",
        ]
        if env.base_url != s.base_url:
            lines.append(f"  (the environment alone would give {env.base_url})")
        return "\n".join(lines)


@dataclass
class _Request:
    conv: Conversation
    message: Messages
    params: dict[str, Any]
    output: str | None
    background: bool
    approve: bool = False

    def stream_params(self, approvals: Approvals | None) -> dict[str, Any]:
        """The parameters to send with; ``approve``: the live view's buttons when
        there is one, else the terminal."""
        if not self.approve:
            return self.params
        return {**self.params, "approve": approvals.ask if approvals else True}


class _Namespace(dict[str, Any]):
    """The user namespace for ``str.format``: missing names raise KeyError."""

    def __init__(self, ns: Mapping[str, Any]) -> None:
        super().__init__()
        self._ns = ns

    def __missing__(self, key: str) -> Any:
        if key in self._ns:
            return self._ns[key]
        raise KeyError(key)


class _LiveOutput:
    """The cell's output while a reply streams: a ReplyView fed coalesced deltas, then
    replaced by static HTML when the turn ends."""

    def __init__(
        self,
        stream: AsyncStream | Stream,
        allow_images: bool = False,
        approvals: Approvals | None = None,
    ) -> None:
        from .view import ReplyView  # the widget stack loads only when needed

        self.turn = stream.turn
        self.allow_images = allow_images
        self.view = ReplyView(
            on_stop=stream.cancel,
            on_approve=approvals.answer if approvals else None,
            allow_images=allow_images,
        )
        self.handle = display(self.view, display_id=True)
        loop = _running_loop()
        self._coalescer = Coalescer(self._push, loop)
        self._tools = ToolFeed(
            self.view.tool, self._coalescer.flush, lambda: self.view.text_len, loop
        )

    def _push(self, text: str, reasoning: str, with_readout: bool) -> None:
        self.view.push(text, reasoning, self.turn if with_readout else None)

    def add(self, ev: Event) -> None:
        if isinstance(ev, AttemptStart):
            self._coalescer.flush()  # the text before it goes first
            self.view.attempt(ev)
        elif not self._tools.add(ev):
            self._coalescer.add(ev)

    def finish(self, turn: Turn) -> None:
        self._coalescer.flush()
        self._tools.flush()
        # The HTML replaces the live view, which then closes: its final traits would
        # never be seen or saved, so they are not sent (that saves the text once more).
        if self.handle is not None:
            bundle = final_bundle(turn, allow_images=self.allow_images)
            self.handle.update(bundle, raw=True)
        self.view.close()


def _terminal_text(ev: Event) -> str:
    """What the terminal prints of an event: the reply's text, and a line per tool
    call when it ends."""
    if isinstance(ev, TextDelta):
        return ev.text if ev.choice == 0 else ""
    if isinstance(ev, ToolRun) and ev.result is not None:
        return (
            "\n"
            + tool_line(ev.name, ev.arguments, ev.status, ev.result, ev.elapsed_s)
            + "\n"
        )
    return ""


def _batch_bundle(turn: Turn, allow_images: bool = False) -> dict[str, str]:
    """A deterministic final output: no timings (they differ run to run)."""
    r = readout_of(turn)
    timings = ("ttft_s", "tokens_per_s", "elapsed_s")
    line = readout_text({k: v for k, v in r.items() if k not in timings})
    return final_bundle(
        turn, readout_line=line, allow_images=allow_images, timings=False
    )


def _history_html(conv: Conversation, allow_images: bool = False) -> str:
    # each message a block of its own, its role label in an element of its own: nothing
    # a message holds can run into the label or the next message
    blocks = []
    for turn in conv.transcript:
        for m in turn.request.messages:
            role = str(m.get("role", "user"))
            blocks.append(
                message_html(role, m.get("content"), allow_images=allow_images)
            )
        reply = reply_html(turn, allow_images=allow_images)
        blocks.append(
            message_html("assistant", None, note=turn.status, body_html=reply)
        )
    if not blocks:
        blocks.append("<p><em>(no turns yet)</em></p>\n")
    else:
        line = escapeHtml(totals_text(totals(conv.transcript)))
        blocks.append(f'<p class="nbs-totals"><sub>{line}</sub></p>\n')
    return wrap_html(blocks, "history")


def _history_text(conv: Conversation) -> str:
    lines = []
    for turn in conv.transcript:
        for m in turn.request.messages:
            lines.append(f"{m.get('role', 'user')}: {summary(m.get('content'))}")
        lines.append(f"assistant ({turn.status}): {turn.text}")
    if lines:
        lines.append(f"[{totals_text(totals(conv.transcript))}]")
    return "\n".join(lines) or "(no turns yet)"


def _parse(magic: Any, line: str) -> Any:
    """Parse options like a shell does (both quote styles), raising UsageError."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(
            f"Could not read the options {line!r}: {exc}. Check the quotes."
        ) from None
    return magic.parser.parse_args(words)


async def _keep_loop_awake() -> None:
    """Tick the kernel's loop at 10 Hz while a cell awaits a reply.

    ipykernel 7.4 turns the interrupt button into a cancellation of the running cell, but
    schedules it without waking the event loop, so while a stream is quiet (a slow first
    token, a stall) the interrupt would wait for the next network event, or land on the
    next cell. Measured: without the tick, 2 interrupts in 4 did nothing for 6 s; with it,
    all landed within 0.35 s.
    """
    while True:
        await asyncio.sleep(0.1)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_HELP = """\
%%chat [options]      send the cell to the model; the reply streams into the output
  -m MODEL[,FALLBACK,…]  --recover restart|prefill|user_turn  -a openai|anthropic
  -u BASE_URL  -s SYSTEM  -t TEMPERATURE  --max-tokens N  --timeout SECONDS
  -c NAME (conversation)  -o VAR (store the Turn)  -i (fill {name})
  --new (fresh conversation)  -b/--background  --with df,fig (send variables too)
  --tools f,g (functions the model may call)  --approve (ask first)  --max-steps N
  --tool-choice auto|required|none|NAME
%chat history [NAME] | clear [NAME] | config | stop | list | help
%chat cache on [PATH] | off   answer cells already asked from a store (marked cached)
nbstream.conversation(NAME).transcript holds every turn (to_pandas(), save(), …)."""


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
