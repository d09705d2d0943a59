"""Running the example notebooks under nbval (see README.md in this folder).

Each notebook's kernel inherits this process's environment, so it is settled here,
before any kernel starts:

- nbval starts each kernel in this folder, so a relative ``NBSTREAM_REPLAY``
  (``NBSTREAM_REPLAY=notebooks/recordings pytest --nbval notebooks/``) would be looked up
  from here: it is made absolute, from where pytest was started (``NBSTREAM_RECORD`` too).
- Replay matches requests by their body, which holds the model name, and the model
  depends on the configuration (with ``OPENAI_API_KEY`` set, nbstream asks OpenAI's
  ``gpt-4o-mini``). So when replaying, the notebooks see what a fresh user has: no
  ``NBSTREAM_*`` settings, no ``OPENAI_*`` or ``ANTHROPIC_*`` variables.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_KEEP = (
    "NBSTREAM_REPLAY",
    "NBSTREAM_REPLAY_SPEED",
    "NBSTREAM_RECORD",
    "NBSTREAM_FIXTURES",
)


def pytest_configure(config: pytest.Config) -> None:
    for var in ("NBSTREAM_REPLAY", "NBSTREAM_RECORD"):
        value = os.environ.get(var)
        if value and not Path(value).is_absolute():
            os.environ[var] = str(Path(config.invocation_params.dir, value).resolve())
    if os.environ.get("NBSTREAM_REPLAY"):
        for var in list(os.environ):
            if (
                var.startswith(("NBSTREAM_", "OPENAI_", "ANTHROPIC_"))
                and var not in _KEEP
            ):
                del os.environ[var]
