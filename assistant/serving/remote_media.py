"""Fetch a remote image for a request without letting a client reach the server's own network (SSRF).

Remote image URLs are off unless the operator names the hosts they may come from. A URL is fetched
only when all of these hold, and is refused with a ``RemoteImageRefused`` naming the reason otherwise:

* the scheme is http or https and the URL carries no user name or password;
* its host is on the allow-list (exact names, compared lowercase);
* every address the host resolves to is a public unicast address: no private, loopback, link-local,
  multicast, reserved, unspecified or shared (CGNAT) address, for IPv4 and IPv6, including IPv4
  addresses embedded in IPv6 (IPv4-mapped, 6to4, NAT64, Teredo);
* the connection goes to the address that was checked: the URL is rewritten to that IP, with the
  original ``Host`` header and TLS server name (so certificates are still verified against the host
  name), so a second DNS answer (rebinding) cannot redirect it;
* the answer is a 200 (redirects are never followed) with an ``image/*`` content type, arrives
  within the time limit, and its body, counted as it streams in, stays under the size cap.

Proxy settings from the environment are ignored. This module knows nothing about the model or about
decoding images (the assistant's media loader checks the bytes as it checks an upload).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from typing import Callable, Iterable
from urllib.parse import urlsplit

import httpx

from assistant.errors import AssistantError

logger = logging.getLogger(__name__)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Iterable[str]]

NAT64 = ipaddress.ip_network("64:ff9b::/96")
SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT, RFC 6598


class RemoteImageRefused(AssistantError):
    """A remote image URL was not fetched; the message says why."""


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system resolver)."""
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise RemoteImageRefused(f"cannot resolve host {host!r}: {error}") from None
    return [answer[4][0] for answer in answers]


def embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64 or Teredo client), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public_address(address: Address) -> bool:
    """Whether ``address`` is a public unicast address a server may connect to for a client."""
    inner = embedded_ipv4(address)
    if inner is not None and not is_public_address(inner):
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return True  # the mapped IPv4 address decided it
    flags = (address.is_private, address.is_loopback, address.is_link_local, address.is_multicast,
             address.is_reserved, address.is_unspecified)
    if any(flags) or not address.is_global:
        return False
    if isinstance(address, ipaddress.IPv4Address) and address in SHARED:
        return False
    return not (isinstance(address, ipaddress.IPv6Address) and address.is_site_local)


class RemoteImageFetcher:
    """``fetcher(url) -> bytes`` for ``from_openai_messages(fetch_image=...)``.

    Args:
        allowed_hosts: Host names (or IP literals) images may come from.
        max_bytes: Largest body accepted, counted while it streams in.
        timeout_s: Time limit for the whole fetch (connect, headers and body).
        resolve: ``resolve(host, port) -> addresses``; the system resolver by default (tests inject one).
        address_allowed: Which resolved addresses may be connected to; public unicast only by default.
    """

    def __init__(self, allowed_hosts: Iterable[str], max_bytes: int, timeout_s: float,
                 resolve: Resolver = resolve_host, address_allowed: Callable[[Address], bool] = is_public_address) -> None:
        self.allowed_hosts = {_normal_host(host) for host in allowed_hosts}
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.resolve = resolve
        self.address_allowed = address_allowed

    def __call__(self, url: str) -> bytes:
        shown = url if len(url) <= 200 else url[:200] + "..."
        try:
            return self._fetch(url)
        except RemoteImageRefused as error:
            logger.info("refused remote image %s: %s", shown, error)
            raise RemoteImageRefused(f"image URL {shown} was not fetched: {error}") from None

    def vet(self, url: str) -> tuple[httpx.URL, str, Address]:
        """Check ``url`` and resolve its host: (the URL, its host, the one address to connect to).

        Raises:
            RemoteImageRefused: The scheme, credentials, host or any resolved address is not allowed.
        """
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as error:
            raise RemoteImageRefused(f"malformed URL ({error})") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise RemoteImageRefused(f"scheme {scheme or '(none)'!r} is not http or https")
        if parts.username is not None or parts.password is not None:
            raise RemoteImageRefused("URLs with a user name or password are not fetched")
        host = _normal_host(parts.hostname or "")
        if not host:
            raise RemoteImageRefused("the URL has no host")
        if host not in self.allowed_hosts:
            raise RemoteImageRefused(f"host {host!r} is not on this server's image host allow-list")
        port = port or (443 if scheme == "https" else 80)
        literal = _ip_literal(host)
        candidates = [host] if literal is not None else list(self.resolve(host, port))
        addresses = [_parse_address(candidate) for candidate in candidates]
        if not addresses:
            raise RemoteImageRefused(f"host {host!r} resolved to no address")
        refused = [str(address) for address in addresses if not self.address_allowed(address)]
        if refused:
            raise RemoteImageRefused(f"host {host!r} resolves to non-public address(es) {refused}")
        try:
            return httpx.URL(url), host, addresses[0]
        except httpx.InvalidURL as error:  # e.g. longer than httpx accepts
            raise RemoteImageRefused(f"the image URL is not valid: {error}") from None

    def _fetch(self, url: str) -> bytes:
        target, host, address = self.vet(url)
        deadline = time.monotonic() + self.timeout_s
        pinned = target.copy_with(host=str(address))  # connect to the vetted address, never a fresh DNS answer
        headers = {"Host": target.netloc.decode("ascii"), "Accept": "image/*", "Accept-Encoding": "identity",
                   "User-Agent": "multimodal-assistant-server"}
        extensions = {"sni_hostname": host} if target.scheme == "https" else {}
        try:
            with httpx.Client(timeout=httpx.Timeout(self.timeout_s), follow_redirects=False, trust_env=False) as client:
                request = client.build_request("GET", pinned, headers=headers, extensions=extensions)
                response = client.send(request, stream=True)
                try:
                    return self._read(response, deadline)
                finally:
                    response.close()
        except httpx.TimeoutException:
            raise RemoteImageRefused(f"no complete answer within {self.timeout_s:g} s") from None
        except httpx.HTTPError as error:
            raise RemoteImageRefused(f"the request failed: {type(error).__name__}: {error}") from None

    def _read(self, response: httpx.Response, deadline: float) -> bytes:
        if response.is_redirect or 300 <= response.status_code < 400:
            raise RemoteImageRefused(f"the server answered with a redirect (HTTP {response.status_code}); redirects are not followed")
        if response.status_code != 200:
            raise RemoteImageRefused(f"the server answered HTTP {response.status_code}")
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if not content_type.startswith("image/"):
            raise RemoteImageRefused(f"content type {content_type or '(none)'!r} is not an image type")
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise RemoteImageRefused(f"the image is {int(declared)} bytes, over the limit of {self.max_bytes}")
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > self.max_bytes:
                raise RemoteImageRefused(f"the image is over the limit of {self.max_bytes} bytes")
            if time.monotonic() > deadline:
                raise RemoteImageRefused(f"no complete answer within {self.timeout_s:g} s")
        return bytes(body)


def _normal_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    literal = _ip_literal(host)
    return str(literal) if literal is not None else host


def _ip_literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _parse_address(text: str) -> Address:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone index
    except ValueError:
        raise RemoteImageRefused(f"the resolver returned {text!r}, which is not an IP address") from None
