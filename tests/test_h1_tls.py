"""TLS, for real: a loopback server with a certificate from a throwaway CA (made with
the ``openssl`` command). nbstream's HTTP/1.1 client verifies the certificate and the
host name, sends SNI, trusts ``SSL_CERT_FILE`` as httpx2 does, reuses its TLS
connections, and Stop closes one at once.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbstream import APIConnectionError, Client, TextDelta, Timeouts
from nbstream._http.transport import HTTP
from tests.clientkit import KEY
from tests.loopback import openai_chunks
from tests.rawserver import RawServer, Script, chunked, sse_body

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl")

HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, and a certificate it signed for ``localhost`` (not for 127.0.0.1)."""
    d = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=nbstream test CA")  # fmt: skip
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")  # fmt: skip
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2",
        "-extfile", "ext.cnf")  # fmt: skip
    return d


@pytest.fixture
def tls(certs: Path) -> Iterator[RawServer]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs / "server.pem", certs / "server.key")
    ctx.set_alpn_protocols(["h2", "http/1.1"])  # a server that would speak HTTP/2
    with RawServer(ssl_context=ctx) as srv:
        yield srv


def reply(words: list[str], *, keep: bool = True) -> Script:
    return Script([HEAD + chunked(*sse_body(*openai_chunks(words)))], keep=keep)


def client_for(url: str, http: str = "h1") -> Client:
    return Client(
        base_url=url,
        model="m",
        api_key=KEY,
        http=http,
        max_retries=0,
        timeout=Timeouts(connect=3.0, first_byte=3.0, idle=3.0, first_token=3.0),
    )


def chats(client: Client, n: int) -> list[str]:
    async def go() -> list[str]:
        try:
            return [(await client.achat("Hi")).text for _ in range(n)]
        finally:
            await client.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("http", ["h1", "httpx2"])
def test_a_certificate_from_ssl_cert_file_is_trusted(
    tls: RawServer, certs: Path, monkeypatch: pytest.MonkeyPatch, http: str
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certs / "ca.pem"))
    tls.enqueue(*(reply([f"w{i}"]) for i in range(3)))
    assert chats(client_for(tls.base_url, http), 3) == ["w0", "w1", "w2"]
    assert len(tls.connections) == 1  # one handshake, kept alive
    assert tls.sni == ["localhost"]
    assert tls.alpn == ["http/1.1"]  # never h2: neither client offers it


@pytest.mark.parametrize("http", ["h1", "httpx2"])
def test_an_unknown_ca_is_refused(tls: RawServer, http: str) -> None:
    tls.enqueue(reply(["never"]))
    with pytest.raises(APIConnectionError) as info:
        chats(client_for(tls.base_url, http), 1)
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    assert tls.requests == []


def test_a_certificate_for_another_host_is_refused(
    tls: RawServer, certs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certs / "ca.pem"))
    url = tls.base_url.replace("localhost", "127.0.0.1")  # the cert names localhost
    with pytest.raises(APIConnectionError) as info:
        chats(client_for(url), 1)
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    assert "127.0.0.1" in str(info.value)


def test_the_tls_context_is_httpx2s_built_once(
    certs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nbstream._http.transport import ssl_context

    monkeypatch.setenv("SSL_CERT_FILE", str(certs / "ca.pem"))
    ctx = ssl_context()
    assert ctx is ssl_context()  # built once per value of the variables
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert HTTP("https://localhost/v1", Timeouts()).kind == "h1"


def test_stop_closes_a_tls_connection_at_once(
    tls: RawServer, certs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certs / "ca.pem"))
    first = chunked(
        *sse_body(*openai_chunks(["Once"], finish=None, done=False)), end=b""
    )
    tls.enqueue(Script([HEAD + first, 10.0]))
    stopped: list[float] = []
    with client_for(tls.base_url).stream("Hi") as s:
        for ev in s:
            if isinstance(ev, TextDelta):
                stopped.append(time.monotonic())
                threading.Thread(target=s.cancel).start()
    assert s.turn.status == "cancelled" and s.turn.text == "Once"
    assert tls.wait_for(lambda: tls.connections[0].closed_at is not None, 5)
    closed = tls.connections[0].closed_at
    assert closed is not None and closed - stopped[0] < 0.1
