from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from tests.loopback import LoopbackServer

# Properties are about what holds, not how fast: a loaded CI machine must not turn a
# slow example into a failure.
settings.register_profile("nbstream", deadline=None)
settings.load_profile("nbstream")

# Recorded provider streams (a copy of the team's shared fixtures, with their sources and
# licences in tests/fixtures/SOURCES.md); NBSTREAM_FIXTURES points elsewhere.
FIXTURES = Path(
    os.environ.get("NBSTREAM_FIXTURES") or Path(__file__).resolve().parent / "fixtures"
)
STREAMS = FIXTURES / "streams"


def expected() -> dict[str, Any]:
    return json.loads((FIXTURES / "EXPECTED.json").read_text())


def stream_names() -> list[str]:
    return sorted(p.name for p in STREAMS.glob("*.sse"))


def api_of(name: str) -> str:
    return "anthropic" if expected()[name]["kind"] == "anthropic" else "openai"


@pytest.fixture(autouse=True)
def _clean_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Tests never see the developer's own keys, endpoints or local model server.
    ``NBSTREAM_HTTP`` stays: ``NBSTREAM_HTTP=httpx2 pytest`` runs the suite on httpx2."""
    for var in list(os.environ):
        if var.startswith(("NBSTREAM_", "OPENAI_", "ANTHROPIC_")) and var not in (
            "NBSTREAM_FIXTURES",
            "NBSTREAM_HTTP",
        ):
            monkeypatch.delenv(var)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(params=["h1", "httpx2"])
def http(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test once on each HTTP client nbstream can use: its own HTTP/1.1 client
    and httpx2 (``NBSTREAM_HTTP``; ``pytestmark = pytest.mark.usefixtures("http")``
    runs a whole module on both)."""
    monkeypatch.setenv("NBSTREAM_HTTP", request.param)
    return str(request.param)


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv
