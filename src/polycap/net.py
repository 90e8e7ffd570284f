"""Fetch an image URL without letting the caller reach what only this machine can reach.

Below both :mod:`polycap.images` (``load_image(url, allow_urls=True)``) and :mod:`polycap.serve`
(image URLs in requests), so neither has to import the other.

A server that downloads URLs on a client's behalf can be turned against its own network (SSRF):
``http://127.0.0.1:6379/``, ``http://10.0.0.5/admin``, the cloud metadata service at
``169.254.169.254``, or a public URL that redirects to any of them. The rules here:

* ``http``/``https`` only, no credentials in the URL;
* the host is resolved once and *every* address it resolves to must be public (a name that
  resolves to one public and one private address is refused: DNS answers can rotate);
* the connection goes to the vetted address itself (the Host header and TLS SNI/certificate check
  still use the name), so a second, different DNS answer (rebinding) is never used;
* redirects are followed by hand, each hop vetted again, at most ``max_redirects``;
* environment proxies are ignored (a proxy would connect to whatever the name means to it);
* the body is streamed and cut at ``max_bytes``;
* the whole fetch (name lookups, connects, every read, every hop) has one deadline, so a host that
  sends a byte a second is cut off like one that sends nothing;
* credentials never appear in what is echoed back (:func:`redact_url`).

The fetch is asynchronous (httpx's async client): a slow host holds no thread, only a socket, so
it cannot starve the threads the rest of the server needs. Needs ``httpx`` (the ``serve`` extra),
imported only when a fetch runs. Errors are :class:`polycap.ImageError` subclasses, so a failed
fetch is one failed item, like a damaged file.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit, urlunsplit

from polycap.errors import ImageError

if TYPE_CHECKING:
    from concurrent.futures import Executor

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_REDIRECTS = 3
USER_AGENT = "polycap-fetch (+https://pypi.org/project/polycap/)"

# Cloud metadata endpoints. Most are link-local or private anyway; listed so the refusal says why
# and so that they stay refused even if a policy is loosened for tests.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known NAT64 prefix: the low 32 bits are an IPv4 address
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class FetchError(ImageError):
    """The URL could not be fetched, or was refused before any connection was made."""


def redact_url(url: str) -> str:
    """``url`` without ``user:password@``, fit to echo in records, errors and logs."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return "<invalid URL>"
    if "@" not in parts.netloc:
        return url.strip()
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def blocked_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be contacted on a client's behalf, or None if it is a public address.

    IPv4 addresses embedded in IPv6 (``::ffff:127.0.0.1``, 6to4, Teredo, NAT64) are judged as the IPv4
    address they lead to, since that is where the packets go.
    """
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = blocked_reason(embedded)
            return f"{inner} (inside the IPv6 address)" if inner else None
    checks = (
        ("is_unspecified", "an unspecified address"),
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"),
        ("is_private", "a private address"),
        ("is_multicast", "a multicast address"),
        ("is_reserved", "a reserved address"),
    )
    for attr, why in checks:
        if getattr(ip, attr):
            return why
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "a site-local address"
    if not ip.is_global:
        return "not a public address"
    return None


def is_public(ip: IPAddress) -> bool:
    """The default policy: only public addresses may be fetched from."""
    return blocked_reason(ip) is None


def system_resolver(host: str, port: int) -> list[str]:
    """All addresses ``host`` resolves to (both families), as strings."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise FetchError(f"cannot resolve host {host!r}: {e}") from e
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def vet_host(
    host: str, port: int, resolver: Resolver = system_resolver, allow: Callable[[IPAddress], bool] = is_public
) -> IPAddress:
    """Resolve ``host`` and return the address to connect to, refusing if any address is not allowed."""
    try:
        addresses = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolver(host, port)]
    if not addresses:
        raise FetchError(f"host {host!r} resolves to no address")
    for ip in addresses:
        if not allow(ip):
            why = blocked_reason(ip) or "not allowed by the fetch policy"
            raise FetchError(f"refused: {host} resolves to {ip}, {why}")
    return addresses[0]


def fetch_url(url: str, **kwargs: Any) -> bytes:
    """Blocking form of :func:`fetch_image` (same arguments), for :func:`polycap.images.load_image`.

    Runs the fetch on an event loop of its own: in this thread, or, when this thread already runs
    one (a notebook), in a short-lived helper thread.
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(fetch_image(url, **kwargs))
    with ThreadPoolExecutor(1, thread_name_prefix="polycap-fetch") as pool:
        return pool.submit(asyncio.run, fetch_image(url, **kwargs)).result()


async def fetch_image(
    url: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
    resolver: Resolver = system_resolver,
    allow: Callable[[IPAddress], bool] = is_public,
    executor: Executor | None = None,
) -> bytes:
    """Download an image URL safely (see the module docstring) and return its bytes.

    ``timeout_s`` is one deadline for the whole fetch: name lookups, connects, every read of every
    redirect hop. A host that trickles bytes is cut off when it passes, whatever it sends.
    ``executor`` runs the (blocking) name lookups; the server passes its own bounded pool so that
    slow DNS never occupies threads other work needs. ``resolver`` and ``allow`` exist for tests (a
    fake DNS, a loopback server standing in for a public one); production callers keep the defaults.
    """
    import asyncio  # here, not at the top: importing polycap.images (which uses redact_url) stays light

    try:
        async with asyncio.timeout(timeout_s):
            return await _fetch(url, max_bytes, max_redirects, resolver, allow, executor)
    except TimeoutError:
        raise FetchError(f"timed out after {timeout_s:g} s", redact_url(url)) from None


async def _fetch(
    url: str,
    max_bytes: int,
    max_redirects: int,
    resolver: Resolver,
    allow: Callable[[IPAddress], bool],
    executor: Executor | None,
) -> bytes:
    import asyncio

    import httpx

    loop = asyncio.get_running_loop()
    current = url
    async with httpx.AsyncClient(trust_env=False, follow_redirects=False, verify=_tls_context()) as client:
        for _hop in range(max_redirects + 1):
            target = _check_url(current)
            if _is_ip_literal(target["host"]):  # nothing to look up: no thread needed
                ip = vet_host(target["host"], target["port"], resolver, allow)
            else:
                ip = await loop.run_in_executor(executor, vet_host, target["host"], target["port"], resolver, allow)
            location = await _get(client, target, ip, max_bytes)
            if isinstance(location, bytes):
                return location
            current = urljoin(current, location)
    raise FetchError(f"too many redirects (more than {max_redirects})", redact_url(url))


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@functools.cache
def _tls_context() -> Any:
    """One TLS context (with the CA bundle loaded) for every fetch: building it costs ~20 ms of CPU."""
    import httpx

    return httpx.create_ssl_context()


def _check_url(url: str) -> dict[str, Any]:
    """Split ``url`` and refuse anything but plain http(s) URLs with a host."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as e:
        raise FetchError(f"invalid URL: {e}", shown) from e
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError(f"refused: only http and https URLs are fetched, not {scheme or 'no scheme'!r}", shown)
    if parts.username is not None or parts.password is not None:
        raise FetchError("refused: URLs with credentials (user:password@) are not fetched", shown)
    host = parts.hostname
    if not host:
        raise FetchError("invalid URL: no host", shown)
    port = port or (443 if scheme == "https" else 80)
    return {"url": url.strip(), "scheme": scheme, "host": host, "port": port, "netloc": parts.netloc}


async def _get(client: Any, target: dict[str, Any], ip: IPAddress, max_bytes: int) -> bytes | str:
    """One GET to the pinned address. Returns the body, or the Location of a redirect.

    No timeout of its own: the caller's deadline (``asyncio.timeout``) covers connect and reads.
    """
    import httpx

    pinned = httpx.URL(target["url"]).copy_with(host=str(ip), port=target["port"])
    headers = {"Host": target["netloc"], "User-Agent": USER_AGENT, "Accept": "image/*"}
    extensions = {"sni_hostname": target["host"]} if target["scheme"] == "https" else {}
    try:
        async with client.stream(
            "GET", pinned, headers=headers, extensions=extensions, timeout=httpx.Timeout(None)
        ) as resp:
            if resp.status_code in _REDIRECTS:
                location = resp.headers.get("location")
                if not location:
                    raise FetchError(f"redirect ({resp.status_code}) without a Location header", target["url"])
                return location
            if resp.status_code != 200:
                raise FetchError(f"the server answered HTTP {resp.status_code}", target["url"])
            _check_headers(resp.headers, max_bytes, target["url"])
            return await _read_capped(resp, max_bytes, target["url"])
    except httpx.HTTPError as e:
        raise FetchError(f"download failed: {type(e).__name__}: {e}", target["url"]) from e


def _check_headers(headers: Any, max_bytes: int, url: str) -> None:
    length = headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise FetchError(f"too large: {int(length):,} bytes (limit {max_bytes:,})", url)
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype.startswith(("text/", "application/json", "application/xml", "application/xhtml")):
        raise FetchError(f"not an image: the server sent {ctype}", url)


async def _read_capped(resp: Any, max_bytes: int, url: str) -> bytes:
    """Stream the body as it arrives; stop as soon as it passes ``max_bytes``."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise FetchError(f"too large: more than {max_bytes:,} bytes", url)
        chunks.append(chunk)
    if size == 0:
        raise FetchError("the server sent an empty body", url)
    return b"".join(chunks)
