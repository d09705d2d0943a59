"""Build the provider recordings of notebooks/structured_output.ipynb from real streams.

Two structured-output replies that other projects recorded from the real APIs (see
ATTRIBUTION.md beside this file), each paired with the request nbstream sends for the
notebook's code, as make_fixture_recordings.py does for the other notebooks (same
chunking, same synthetic pacing):

- OpenAI, gpt-4o-2024-08-06, ``response_format=Location`` (openai-python's test
  ``test_parse_pydantic_model``: the same prompt and model class);
- Anthropic, claude-sonnet-4-5, ``response_format=list[int]`` (anthropic-sdk-python's
  ``test_stream_with_raw_schema``): the request body nbstream sends is the one the SDK
  recorded, byte for byte in content.

The notebook's ``%%chat`` cells talk to the local model; their recording
(``structured_output.jsonl``) is made from it as notebooks/README.md says.

    python notebooks/recordings/make_structured_recordings.py [FIXTURES_DIR]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from make_fixture_recordings import HERE, anthropic_body, exchange, openai_body, user
from nbstream._http.replay import Recording

LOCATION_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "Location",
        "strict": True,
        "schema": {
            "title": "Location",
            "type": "object",
            "properties": {
                "city": {"title": "City", "type": "string"},
                "temperature": {"title": "Temperature", "type": "number"},
                "units": {"title": "Units", "type": "string", "enum": ["c", "f"]},
            },
            "required": ["city", "temperature", "units"],
            "additionalProperties": False,
        },
    },
}

RECORDINGS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "streams/openai_chat_structured_output.sse",
        "/chat/completions",
        openai_body(
            "gpt-4o-2024-08-06",
            [user("What's the weather like in SF?")],
            response_format=LOCATION_FORMAT,
        ),
    ),
    (
        "extra/anthropic_structured_output_array.sse",
        "/messages",
        anthropic_body(
            "claude-sonnet-4-5",
            [
                user(
                    "Extract order IDs from the following text:\n\nOrder 12345\nOrder 67890"
                )
            ],
            max_tokens=1024,
            output_config={
                "format": {
                    "type": "json_schema",
                    "schema": {"type": "array", "items": {"type": "integer"}},
                }
            },
        ),
    ),
]


def main(argv: list[str]) -> int:
    default = (
        os.environ.get("NBSTREAM_FIXTURES") or HERE.parents[1] / "tests" / "fixtures"
    )
    fixtures = Path(argv[1] if len(argv) > 1 else default)
    for fixture, path, body in RECORDINGS:
        source = fixtures / fixture
        out = HERE / (source.name.removesuffix(".sse") + ".jsonl")
        out.write_text(exchange(source, path, body).to_json() + "\n", encoding="utf-8")
        (ex,) = Recording.load(out).exchanges  # the bytes come back unchanged
        assert b"".join(d for _, d in ex.chunks) == source.read_bytes()
        print(f"{out.relative_to(HERE.parent)}: {out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
