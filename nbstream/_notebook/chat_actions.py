"""What ``%chat ACTION`` does: history, clear, config, stop, list, cache, help.

``magics.py`` parses the line; each action here reads and sets the magics' options.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from IPython.core.error import UsageError
from IPython.display import display

from .._http import registry
from .._http.settings import resolve
from .cell_output import history_html, history_text

if TYPE_CHECKING:
    from .magics import ChatMagics

__all__ = ["DEFAULT_CACHE", "HELP", "cache_action", "config_text", "print_action"]

DEFAULT_CACHE = "nbstream-cache.sqlite"  # %chat cache on, with no path and no env


def print_action(magics: ChatMagics, args: argparse.Namespace) -> None:
    action = args.action
    if action == "history":
        conv = registry.conversation(args.name)
        display(
            {
                "text/html": history_html(conv, magics.allow_images),
                "text/plain": history_text(conv),
            },
            raw=True,
        )
    elif action == "clear":
        registry.conversation(args.name).transcript.clear()
        print(f"Cleared conversation {args.name or registry.DEFAULT!r}.")
    elif action == "config":
        print(config_text(magics))
    elif action == "stop":
        n = magics.stop_all()
        print(f"Stopped {n} running {'reply' if n == 1 else 'replies'}.")
    elif action == "list":
        for name, conv in registry.conversations().items():
            print(f"{name}: {conv.transcript!r}")
    elif action == "cache":
        print(cache_action(magics, args.name, args.path))
    elif action == "help":
        print(HELP)
    else:
        raise UsageError(f"%chat {action!r} is not an action. {HELP}")


def cache_action(magics: ChatMagics, switch: str | None, path: str | None) -> str:
    """``%chat cache on [PATH]`` / ``off`` / (nothing: say which cache is used)."""
    if switch == "on":
        magics.cache = path or os.environ.get("NBSTREAM_CACHE") or DEFAULT_CACHE
    elif switch == "off":
        magics.cache = ""  # off, even when NBSTREAM_CACHE is set
    elif switch is not None:
        raise UsageError(
            f"%chat cache {switch!r}: use `%chat cache on [PATH]` or `%chat cache off`."
        )
    where = magics.cache_path()
    if where is None:
        return "The reply cache is off."
    try:
        magics.client_for(magics.options(""))  # opens (and checks) the file now
    except UsageError as exc:
        magics.cache = ""
        raise UsageError(f"The reply cache cannot be used: {exc}") from None
    return (
        f"The reply cache is on: {where}. A %%chat cell already answered there "
        "is answered from it at once, marked cached."
    )


def config_text(magics: ChatMagics) -> str:
    opts = magics.options("")
    try:
        client = magics.client_for(opts)
    except UsageError as exc:
        return f"The configuration is not usable: {exc}"
    s = client.settings
    env = resolve()
    key_where = "set" if s.api_key else "not set (fine for local servers)"
    lines = [
        "nbstream %%chat configuration (cell options override these):",
        f"  api       {s.api}",
        f"  base_url  {s.base_url}   (from {s.source if magics.base_url is None else '%config ChatMagics.base_url'})",
        f"  model     {s.model}",
        f"  api key   {key_where}",
        f"  system    {magics.system!r}",
        f"  temperature {magics.temperature}, max_tokens {magics.max_tokens}, timeout {magics.timeout}, background {magics.background}",
        f"  cache     {client.cache or 'off'}",
    ]
    if env.base_url != s.base_url:
        lines.append(f"  (the environment alone would give {env.base_url})")
    return "\n".join(lines)


HELP = """\
%%chat [options]      send the cell to the model; the reply streams into the output
  -m MODEL[,FALLBACK,…]  --recover restart|prefill|user_turn  -a openai|anthropic
  -u BASE_URL  -s SYSTEM  -t TEMPERATURE  --max-tokens N  --timeout SECONDS
  -c NAME (conversation)  -o VAR (store the Turn)  -i (fill {name})
  --new (fresh conversation)  -b/--background  --with df,fig (send variables too)
  --tools f,g (functions the model may call)  --approve (ask first)  --max-steps N
  --tool-choice auto|required|none|NAME
  --schema NAME (JSON of the shape of a pydantic model or schema dict named NAME)
%chat history [NAME] | clear [NAME] | config | stop | list | help
%chat cache on [PATH] | off   answer cells already asked from a store (marked cached)
nbstream.conversation(NAME).transcript holds every turn (to_pandas(), save(), …)."""
