"""The few plain HTTP calls of a provider batch (upload a file, create, poll, cancel,
download the results), for ``provider.py``.

Why not the client's transport (``nbstream._http``): that one is built for streamed
replies (nbstream's own HTTP/1.1 client, or httpx2); a provider batch makes a handful
of calls per hour, none streamed, and uploads and downloads files. So they go through the standard library's ``urllib`` on a
worker thread, with the client's base URL, key, headers and timeouts. A redirect to
another host drops every header that carries the key; what a server says in an error
is scrubbed of the key before it is shown.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .._core.errors import APIConnectionError, APIStatusError
from .._core.providers import provider_for

if TYPE_CHECKING:
    from .._http.client import Client

__all__ = ["Rest", "same_origin"]

JSON_LIMIT = 32 * 1024 * 1024  # an answer that is not a results file
ERROR_LIMIT = 64 * 1024
SPOOL = 16 * 1024 * 1024  # results files above this go to a temporary file


def same_origin(url: str, base_url: str) -> bool:
    a, b = urlsplit(url), urlsplit(base_url)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


class _KeepKeyHome(urllib.request.HTTPRedirectHandler):
    """Follow a redirect, but never carry the key's headers to another host."""

    def __init__(self, secret: set[str]) -> None:
        self.secret = secret

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and not same_origin(newurl, req.full_url):
            for name in list(new.headers):
                if name.lower() in self.secret:
                    del new.headers[name]
        return new


class Rest:
    """JSON over HTTP to the client's server, on a thread."""

    def __init__(self, client: Client) -> None:
        provider = provider_for(client.api)
        key = client.api_key.get() if client.api_key is not None else None
        secret_headers = provider.headers(key)
        self.base_url = client.base_url
        self._headers = {
            "user-agent": "nbstream/0.1",
            "accept": "application/json",
            **client._extra_headers,
            **secret_headers,
        }
        secret = {k.lower() for k in secret_headers if k.lower() != "anthropic-version"}
        secret |= {k.lower() for k in client._extra_headers}  # they may hold a token
        self._opener = urllib.request.build_opener(_KeepKeyHome(secret))
        self._timeout = client.timeouts.first_byte or 120.0
        self.scrub = client._scrubber.scrub

    def __repr__(self) -> str:
        return f"<Rest {self.base_url!r}>"

    def url(self, path: str) -> str:
        return path if "://" in path else self.base_url + path

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        data: bytes | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """``method path`` with a JSON ``body`` (or raw ``data``): the JSON answer."""
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode()
        raw = await asyncio.to_thread(self._fetch, method, path, data, content_type)
        try:
            return json.loads(raw)
        except ValueError:
            raise APIConnectionError(
                f"{method} {path}: the answer is not JSON: "
                f"{self.scrub(raw[:200].decode(errors='replace'))!r}"
            ) from None

    async def upload(
        self, path: str, fields: dict[str, str], name: str, content: bytes
    ) -> Any:
        """A multipart/form-data POST with ``fields`` and one file (the Files API)."""
        boundary = f"nbstream-{uuid.uuid4().hex}"
        parts: list[bytes] = []
        for k, v in fields.items():
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n'
                f"{v}\r\n".encode()
            )
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{name}"\r\nContent-Type: application/jsonl\r\n\r\n'.encode()
        )
        parts += [content, f"\r\n--{boundary}--\r\n".encode()]
        return await self.call(
            "POST",
            path,
            data=b"".join(parts),
            content_type=f"multipart/form-data; boundary={boundary}",
        )

    async def lines(self, path: str) -> Iterator[bytes]:
        """Download a JSONL file (to memory, or to a temporary file if large); its
        non-empty lines."""
        spool = await asyncio.to_thread(self._download, path)
        return _lines(spool)

    # -- on the thread ------------------------------------------------------------
    def _request(
        self, method: str, path: str, data: bytes | None, content_type: str
    ) -> Any:
        headers = dict(self._headers)
        if data is not None:
            headers["content-type"] = content_type
        req = urllib.request.Request(self.url(path), data, headers, method=method)
        try:
            return self._opener.open(req, timeout=self._timeout)
        except urllib.error.HTTPError as exc:
            body = exc.read(ERROR_LIMIT).decode(errors="replace")
            exc.close()
            raise self._status_error(method, path, exc.code, body) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise APIConnectionError(
                f"{method} {path}: {self.scrub(str(reason))}"
            ) from None

    def _fetch(
        self, method: str, path: str, data: bytes | None, content_type: str
    ) -> bytes:
        with self._request(method, path, data, content_type) as resp:
            raw: bytes = resp.read(JSON_LIMIT + 1)
        if len(raw) > JSON_LIMIT:
            raise APIConnectionError(f"{method} {path}: the answer is too large")
        return raw

    def _download(self, path: str) -> IO[bytes]:
        spool = tempfile.SpooledTemporaryFile(SPOOL)  # noqa: SIM115 (returned open)
        try:
            with self._request("GET", path, None, "") as resp:
                while chunk := resp.read(1024 * 1024):
                    spool.write(chunk)
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return spool

    def _status_error(
        self, method: str, path: str, status: int, body: str
    ) -> APIStatusError:
        body = self.scrub(body)
        message: str | None = None
        try:
            err = json.loads(body).get("error")
            if isinstance(err, dict):  # both formats: {"error": {"message": …}}
                message = str(err.get("message") or "") or None
        except (ValueError, AttributeError):
            pass
        shown = message or body[:200]
        return APIStatusError(
            f"{method} {path}: HTTP {status}: {shown}",
            status_code=status,
            provider_message=message,
            body=body,
        )


def _lines(spool: IO[bytes]) -> Iterator[bytes]:
    try:
        for line in spool:
            line = line.strip()
            if line:
                yield line
    finally:
        spool.close()
