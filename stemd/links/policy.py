"""Which URLs may be fetched: http(s) only, optionally only some hosts, and never an
address on this machine or the local network unless allowed (a link file is something
anyone who can write to an inbox can drop; it must not make stemd probe the LAN).

A local address is allowed with ``allow_private``, or when that address itself is listed in
``allowed_hosts`` (``"192.168.1.5"``: that one server, not the whole network)."""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

from stemd.errors import LinkError

Resolver = Callable[[str], list[str]]


@dataclass(frozen=True)
class UrlPolicy:
    allowed_hosts: tuple[str, ...] = ()      # empty = any; "example.com" also allows subdomains
    allow_private: bool = False              # loopback, private, link-local addresses

    def local_allowed(self, address: str) -> bool:
        """Whether a local ``address`` may be fetched from: all with ``allow_private``, else
        only an address listed literally in ``allowed_hosts``."""
        return self.allow_private or normal_address(address) in _literal_addresses(
            self.allowed_hosts)


def resolve(host: str) -> list[str]:
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, None)})
    except (socket.gaierror, UnicodeError):
        return []


def check_url(url: str, policy: UrlPolicy, resolver: Resolver = resolve) -> str:
    """``url`` when it may be fetched; otherwise a LinkError saying why."""
    host = _web_host(url)
    if policy.allowed_hosts and not _host_allowed(host, policy.allowed_hosts):
        raise LinkError(f"{host} is not in links.allowed_hosts.",
                        "Add it to links.allowed_hosts in the config, or use another link.")
    _check_addresses(host, policy, resolver)
    return url


def check_media_url(url: str, policy: UrlPolicy, resolver: Resolver = resolve) -> str:
    """A media address a page points to: any host (a CDN is fine), never a local address
    unless allowed."""
    _check_addresses(_web_host(url), policy, resolver)
    return url


def is_local(address: str) -> bool:
    """Loopback, private, link-local, unspecified, multicast or reserved."""
    ip = ipaddress.ip_address(normal_address(address))
    return (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified
            or ip.is_multicast or ip.is_reserved)


def normal_address(address: str) -> str:
    """An IP address as one spelling: no brackets or zone, IPv4-mapped IPv6 as IPv4."""
    ip = ipaddress.ip_address(address.strip("[]").split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def _web_host(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise LinkError(f"{_short(url)} is not an http(s) address.",
                        "Only web links can be fetched (no file://, ftp:// or others).")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise LinkError(f"{_short(url)} has no host.", "Check the link.")
    return host


def _check_addresses(host: str, policy: UrlPolicy, resolver: Resolver) -> None:
    for address in _addresses(host, resolver):
        if is_local(address) and not policy.local_allowed(address):
            raise LinkError(f"{host} is an address on this machine or the local network "
                            f"({address}).", "Set links.allow_private = true to fetch from the "
                            "local network, or list that one address in links.allowed_hosts.")


def _host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    return any(host == a.lower() or host.endswith("." + a.lower()) for a in allowed)


def _addresses(host: str, resolver: Resolver) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        return resolver(host)


def _literal_addresses(hosts: tuple[str, ...]) -> set[str]:
    found = set()
    for host in hosts:
        try:
            found.add(normal_address(host))
        except ValueError:
            pass                      # a name, not an address
    return found


def _short(url: str) -> str:
    return url if len(url) <= 120 else url[:117] + "..."
