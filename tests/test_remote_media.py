"""SSRF-safe remote image fetching: every refusal, and the allowed path, against a local HTTP server.

The local server listens on 127.0.0.1, so with the default address policy every fetch from it must
be refused even when its host is allow-listed. The allowed path and DNS rebinding are tested with an
injected resolver for the made-up host ``images.test`` (which real DNS cannot resolve, so a fetch that
succeeds has connected to the address the fetcher vetted) and a policy that admits only 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from assistant.errors import AssistantError
from assistant.serving.remote_media import RemoteImageFetcher, RemoteImageRefused, is_public_address

LOOPBACK = ipaddress.ip_address("127.0.0.1")


class ImageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.seen.append((self.path, self.headers.get("Host")))
        image = self.server.image
        if self.path == "/redirect":
            return self._answer(302, b"", {"Location": "/red.png"})
        if self.path == "/page":
            return self._answer(200, b"<html></html>", {"Content-Type": "text/html"})
        if self.path == "/declared-big":
            return self._answer(200, image, {"Content-Type": "image/png", "Content-Length": str(50_000_000)}, length=False)
        if self.path == "/streamed-big":  # no Content-Length: the body ends when the connection closes
            self._answer(200, b"", {"Content-Type": "image/png"}, length=False)
            try:
                for _ in range(100):
                    self.wfile.write(b"\0" * 10_000)
            except OSError:
                pass
            return
        if self.path == "/slow":
            time.sleep(2)
        self._answer(200, image, {"Content-Type": "image/png"})

    def _answer(self, status: int, body: bytes, headers: dict[str, str], length: bool = True) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def image_server(image_files):
    server = ThreadingHTTPServer(("127.0.0.1", 0), ImageHandler)
    server.daemon_threads = True
    server.seen, server.image = [], Path(image_files[0]).read_bytes()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def seen(image_server):
    image_server.seen.clear()
    return image_server.seen


def pinned_fetcher(answers: list[list[str]], **limits) -> tuple[RemoteImageFetcher, list[str]]:
    """A fetcher for ``images.test`` whose resolver gives ``answers`` in turn and whose policy admits only 127.0.0.1."""
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[min(len(asked), len(answers)) - 1]

    options = {"max_bytes": 1_000_000, "timeout_s": 2.0, **limits}
    return RemoteImageFetcher(["images.test"], resolve=resolve, address_allowed=lambda a: a == LOOPBACK, **options), asked


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0", "100.64.0.1", "224.0.0.1",
    "240.0.0.1", "255.255.255.255", "198.18.0.1", "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "fec0::1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "2002:7f00:1::1", "2002:a00:1::1", "64:ff9b::7f00:1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2", "::127.0.0.1", "2001:db8::1",
])
def test_private_and_special_addresses_are_not_public(address):
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1"])
def test_public_addresses_are_public(address):
    assert is_public_address(ipaddress.ip_address(address))


def test_the_local_server_is_refused_even_when_allow_listed(image_server, seen):
    port = image_server.server_address[1]
    fetcher = RemoteImageFetcher(["127.0.0.1", "localhost", "::1", "::ffff:127.0.0.1", "2130706433", "0x7f.1"],
                                 max_bytes=1_000_000, timeout_s=2.0)
    for url in (f"http://127.0.0.1:{port}/red.png", f"http://localhost:{port}/red.png", f"http://[::1]:{port}/red.png",
                f"http://[::ffff:127.0.0.1]:{port}/red.png", f"http://2130706433:{port}/red.png", f"http://0x7f.1:{port}/red.png"):
        with pytest.raises(RemoteImageRefused, match="non-public|cannot resolve"):
            fetcher(url)
    assert seen == []


@pytest.mark.parametrize("url, reason", [
    ("http://evil.test/a.png", "allow-list"),
    ("http://images.test.evil.test/a.png", "allow-list"),
    ("ftp://images.test/a.png", "scheme"),
    ("file:///etc/passwd", "scheme"),
    ("gopher://images.test:70/", "scheme"),
    ("http://user:secret@images.test/a.png", "user name"),
    ("http:///a.png", "no host"),
    ("http://images.test:99999/a.png", "malformed"),
])
def test_urls_outside_the_policy_are_refused_before_any_lookup(url, reason):
    fetcher, asked = pinned_fetcher([["127.0.0.1"]])
    with pytest.raises(RemoteImageRefused, match=reason):
        fetcher(url)
    assert asked == []


def test_an_allowed_host_is_fetched_from_the_vetted_address(image_server, seen, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # environment proxies are ignored
    port = image_server.server_address[1]
    fetcher, asked = pinned_fetcher([["127.0.0.1"]])
    assert fetcher(f"http://IMAGES.test:{port}/red.png") == image_server.image
    assert asked == ["images.test"] and seen == [("/red.png", f"images.test:{port}")]  # the Host header names the host


def test_dns_rebinding_cannot_move_the_connection(image_server, seen):
    port = image_server.server_address[1]
    fetcher, asked = pinned_fetcher([["127.0.0.1"], ["10.0.0.7"]])  # a second lookup would answer an internal address
    assert fetcher(f"http://images.test:{port}/red.png") == image_server.image and asked == ["images.test"]
    fetcher, asked = pinned_fetcher([["10.0.0.7"], ["127.0.0.1"]])  # internal first: refused, never fetched
    with pytest.raises(RemoteImageRefused, match="non-public"):
        fetcher(f"http://images.test:{port}/red.png")
    fetcher, _ = pinned_fetcher([["127.0.0.1", "10.0.0.7"]])  # one bad answer among good ones
    with pytest.raises(RemoteImageRefused, match="10.0.0.7"):
        fetcher(f"http://images.test:{port}/red.png")
    assert [path for path, _ in seen] == ["/red.png"]


@pytest.mark.parametrize("path, reason", [
    ("/redirect", "redirect"),
    ("/page", "content type 'text/html'"),
    ("/red.png", None),
    ("/declared-big", "50000000 bytes"),
    ("/streamed-big", "over the limit"),
])
def test_answers_that_are_not_a_small_image_are_refused(image_server, seen, path, reason):
    port = image_server.server_address[1]
    fetcher, _ = pinned_fetcher([["127.0.0.1"]], max_bytes=100_000)
    if reason is None:  # the control: the same fetcher takes an ordinary image
        assert fetcher(f"http://images.test:{port}{path}") == image_server.image
        return
    with pytest.raises(RemoteImageRefused, match=reason):
        fetcher(f"http://images.test:{port}{path}")
    assert [p for p, _ in seen] == [path]  # a redirect's target is never requested


def test_a_slow_server_runs_into_the_time_limit(image_server):
    port = image_server.server_address[1]
    fetcher, _ = pinned_fetcher([["127.0.0.1"]], timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(RemoteImageRefused, match="within 0.3 s"):
        fetcher(f"http://images.test:{port}/slow")
    assert time.monotonic() - started < 1.5


def test_a_refusal_is_an_assistant_error_naming_the_url():
    fetcher, _ = pinned_fetcher([["127.0.0.1"]])
    with pytest.raises(AssistantError, match=r"image URL http://evil\.test/x\.png was not fetched: host 'evil.test'"):
        fetcher("http://evil.test/x.png")
