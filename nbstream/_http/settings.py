"""Where a client's settings come from: argument → ``NBSTREAM_*`` → provider variables
→ built-in default. Reads the environment, and the small state file of a running local
model server; does no other I/O.

With nothing configured at all, nbstream talks to the local model server that
``python -m nbstream.local`` starts (a real model, no key, no network).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

from .._core.context import DEFAULT_BUDGET
from .._core.errors import ConfigurationError
from .._core.secrets import Secret, check_key
from .._core.transcript import Api

__all__ = [
    "LOCAL_BASE_URL",
    "LOCAL_MODEL",
    "Secret",
    "Settings",
    "Timeouts",
    "context_budget_of",
    "local_state_path",
    "resolve",
]

LOCAL_PORT = 8910
LOCAL_BASE_URL = f"http://127.0.0.1:{LOCAL_PORT}/v1"
LOCAL_MODEL = "SmolLM2-135M-Instruct"
OPENAI_BASE_URL = "https://api.openai.com/v1"
ANTHROPIC_BASE_URL = "https://api.anthropic.com/v1"
DEFAULT_MODELS: dict[Api, str] = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-sonnet-4-5",
}


def local_state_path(env: Mapping[str, str] | None = None) -> Path:
    """Where ``python -m nbstream.local`` records the URL it serves on."""
    env = os.environ if env is None else env
    cache = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "nbstream" / "local.json"


def _local_server(env: Mapping[str, str]) -> str | None:
    """The base URL of a running ``nbstream.local`` server on a non-default port."""
    try:
        state = json.loads(local_state_path(env).read_text())
        os.kill(int(state["pid"]), 0)  # is it still running?
        return str(state["base_url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds to wait. ``None`` waits forever.

    - ``connect``: to connect (and for a free connection of the pool);
    - ``first_byte``: from sending the request to the first byte of the answer;
    - ``first_token``: from sending the request to the first piece of the reply (text,
      reasoning or a tool call): a server that only sends keep-alive comments
      (``: PROCESSING``) is given up on after this;
    - ``idle``: between two events of the reply (comments do not count);
    - ``total``: for the whole reply, if set.

    >>> Timeouts(total=300).first_token
    180.0
    """

    connect: float | None = 10.0
    first_byte: float | None = 120.0
    idle: float | None = 60.0
    first_token: float | None = 180.0
    total: float | None = None

    @classmethod
    def of(cls, value: float | Timeouts | None) -> Timeouts:
        """``Client(timeout=30)``: 30 s for each wait (the total stays unlimited)."""
        if value is None:
            return cls()
        if isinstance(value, Timeouts):
            return value
        v = float(value)
        return cls(v, v, v, v)


@dataclass(frozen=True, slots=True)
class Settings:
    base_url: str
    model: str
    api: Api
    api_key: Secret | None
    source: str  # where base_url came from, to say so in errors
    withheld_key: str | None = None  # a provider key variable not sent to this server


def _check_api(api: str, where: str) -> Api:
    if api not in ("openai", "anthropic"):
        raise ConfigurationError(
            f"{where}: api={api!r} is not known. Use api='openai' (any OpenAI-compatible "
            "/v1/chat/completions server) or api='anthropic' (/v1/messages)."
        )
    return cast(Api, api)


def resolve(
    base_url: str | None = None,
    model: str | None = None,
    api: str | None = None,
    api_key: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Settle every setting; ``None`` means "use the configured default"."""
    env = os.environ if env is None else env
    e = {k: v for k, v in env.items() if v}  # an empty variable counts as unset

    if api is not None:
        the_api = _check_api(api, "Client")
    elif "NBSTREAM_API" in e:
        the_api = _check_api(e["NBSTREAM_API"].strip().lower(), "NBSTREAM_API")
    elif (
        "ANTHROPIC_API_KEY" in e
        and "OPENAI_API_KEY" not in e
        and "NBSTREAM_BASE_URL" not in e
        and "OPENAI_BASE_URL" not in e
        and base_url is None
    ):
        the_api = "anthropic"
    else:
        the_api = "openai"

    provider_key = "ANTHROPIC_API_KEY" if the_api == "anthropic" else "OPENAI_API_KEY"
    if api_key:  # "" counts as unset, as an empty variable does
        own_key: str | None = check_key(api_key, "api_key")
    elif "NBSTREAM_API_KEY" in e:
        own_key = check_key(e["NBSTREAM_API_KEY"], "NBSTREAM_API_KEY")
    else:
        own_key = None
    key = own_key
    if key is None and provider_key in e:
        key = check_key(e[provider_key], provider_key)

    if base_url is not None:
        url, source = base_url, "the base_url argument"
    elif "NBSTREAM_BASE_URL" in e:
        url, source = e["NBSTREAM_BASE_URL"], "NBSTREAM_BASE_URL"
    elif the_api == "openai" and "OPENAI_BASE_URL" in e:
        url, source = e["OPENAI_BASE_URL"], "OPENAI_BASE_URL"
    elif the_api == "anthropic" and "ANTHROPIC_BASE_URL" in e:
        url, source = e["ANTHROPIC_BASE_URL"], "ANTHROPIC_BASE_URL"
    elif the_api == "anthropic":
        url, source = ANTHROPIC_BASE_URL, "the Anthropic default"
    elif key:
        url, source = OPENAI_BASE_URL, "the OpenAI default (an API key is set)"
    else:
        url = _local_server(env) or LOCAL_BASE_URL
        source = "the local-model default (nothing is configured)"
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"base URL {url!r} (from {source}) must start with http:// or https://, "
            "e.g. 'http://127.0.0.1:8000/v1'."
        )
    url = url.rstrip("/")

    # A provider's key goes only to that provider (its official host, or the base URL
    # in its own variable): OPENAI_API_KEY set in a shell must not reach a third-party
    # server that %%chat -u or NBSTREAM_BASE_URL points at. Those take NBSTREAM_API_KEY.
    withheld = None
    if not own_key and key:
        official = "api.anthropic.com" if the_api == "anthropic" else "api.openai.com"
        own_var = "ANTHROPIC_BASE_URL" if the_api == "anthropic" else "OPENAI_BASE_URL"
        if urlsplit(url).hostname != official and source != own_var:
            key, withheld = None, provider_key

    if model is not None:
        the_model = model
    elif "NBSTREAM_MODEL" in e:
        the_model = e["NBSTREAM_MODEL"]
    elif "local-model default" in source:
        the_model = LOCAL_MODEL
    else:
        the_model = DEFAULT_MODELS[the_api]
    return Settings(
        url, the_model, the_api, Secret(key) if key else None, source, withheld
    )


def context_budget_of(budget: int | None) -> int:
    """``Client(context_budget=…)``: the argument, else ``NBSTREAM_CONTEXT_BUDGET``, else
    the default; checked."""
    if budget is None:
        env = os.environ.get("NBSTREAM_CONTEXT_BUDGET")
        if not env:
            return DEFAULT_BUDGET
        try:
            budget = int(env)
        except ValueError:
            budget = 0
        where = f"NBSTREAM_CONTEXT_BUDGET={env!r}"
    else:
        where = f"context_budget={budget!r}"
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ConfigurationError(
            f"{where} is not a number of tokens: give a positive whole number, e.g. "
            f"{DEFAULT_BUDGET}."
        )
    return budget
