"""Where outbound requests may go (SPEC §8): no loopback, private, link-local, metadata.

A provider URL is user input, so a request must not reach this host, the private network
or a cloud metadata service. The transport checks every hop: an IP literal before
connecting (`target_refusal`), a host name after DNS resolution inside the connection's
resolver (`GuardedResolver`, so the address checked is the address connected to: no
rebinding window), and each redirect target the same way. `allow_hosts` lists exceptions:
exact host names (all their addresses are allowed), IP addresses and CIDR networks, each
for any port, or a host name or IP address with a port (`127.0.0.1:8000`, `[::1]:8000`)
for that port alone.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud metadata endpoints not already covered by the link-local / private checks.
_METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack
        ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
        ipaddress.ip_address("fd00:ec2::254"),  # AWS IPv6
    }
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class BlockedAddressError(OSError):
    """Raised inside DNS resolution when a host resolves to a refused address."""

    def __init__(self, host: str, address: str, why: str) -> None:
        self.host = host
        self.address = address
        self.why = why
        super().__init__(f"{host} resolves to {address} ({why})")


def unwrap_address(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one embeds (mapped, 6to4, Teredo, NAT64), else itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip.teredo is not None:
            return ip.teredo[1]
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def address_block_reason(ip: IPAddress) -> str | None:
    """Why an outbound request must not go to `ip`, or None when it is a public address."""
    ip = unwrap_address(ip)
    if ip in _METADATA_ADDRESSES:
        return "cloud metadata"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    if ip.is_reserved or not ip.is_global:
        return "not publicly routable"
    return None


def _parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def _normalise_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _split_port(entry: str) -> tuple[str, int | None]:
    """An allow-list entry as (host, port): `name:8000`, `10.0.0.1:8000`, `[::1]:8000`.

    Without a port (or with something that is not one) the whole entry is the host: an
    IPv6 address or network has colons of its own and needs brackets to take a port.
    """
    text = entry.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if bracket and rest.startswith(":") and rest[1:].isascii() and rest[1:].isdigit():
            return host, int(rest[1:])
        return text, None
    host, colon, port = text.rpartition(":")
    if colon and ":" not in host and port.isascii() and port.isdigit():
        return host, int(port)
    return text, None


class OutboundPolicy:
    """Which targets an outbound request may reach (SPEC §8)."""

    def __init__(self, allow_hosts: Iterable[str] = ()) -> None:
        self.allow_hosts = tuple(allow_hosts)
        self._names: set[str] = set()
        self._networks: list[IPNetwork] = []
        # Entries with a port: (host name, port) and (address, port).
        self._name_ports: set[tuple[str, int]] = set()
        self._address_ports: set[tuple[IPAddress, int]] = set()
        for entry in self.allow_hosts:
            host, port = _split_port(entry)
            text = _normalise_host(host)
            if not text:
                continue
            if port is not None:
                ip = _parse_ip(text)
                if ip is None:
                    self._name_ports.add((text, port))
                else:
                    self._address_ports.add((unwrap_address(ip), port))
                continue
            try:
                self._networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                self._names.add(text)

    def host_allowed(self, host: str, port: int | None = None) -> bool:
        """True when the host name itself is allow-listed (all its addresses may be used),
        for any port or for `port`."""
        name = _normalise_host(host)
        return name in self._names or (port is not None and (name, port) in self._name_ports)

    def address_allowed(self, ip: IPAddress) -> bool:
        """True when `ip` (or the IPv4 address it embeds) is in an allow-listed network."""
        candidates = {ip, unwrap_address(ip)}
        return any(
            candidate.version == net.version and candidate in net
            for candidate in candidates
            for net in self._networks
        )

    def refusal(self, host: str, ip: IPAddress, port: int | None = None) -> str | None:
        """Why `host` at address `ip` (on `port`) is refused, or None when it may be reached."""
        if self.host_allowed(host, port) or self.address_allowed(ip):
            return None
        if port is not None and (unwrap_address(ip), port) in self._address_ports:
            return None
        return address_block_reason(ip)


def blocked_reason(host: str, address: str, why: str) -> str:
    """The `TransportError.reason` for a refused target, with the fix in it."""
    target = (
        address if _normalise_host(host) == _normalise_host(address) else f"{host} -> {address}"
    )
    return (
        f"blocked_address: {target} is a {why} address; outbound requests to it are refused "
        f"unless it is listed in SMSRELAY_ALLOW_HOSTS"
    )


class GuardedResolver(AbstractResolver):
    """Resolves names, then refuses them if any address is not allowed by the policy.

    A name with a mix of public and private addresses is refused as a whole: such records
    are the shape of DNS rebinding, and no SMS provider needs them.
    """

    def __init__(self, policy: OutboundPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner: AbstractResolver = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve `host`; raise `BlockedAddressError` if it leads anywhere refused."""
        results = await self.inner.resolve(host, port, family)
        if self.policy.host_allowed(host, port or None):
            return results
        for result in results:
            ip = _parse_ip(result["host"].split("%", 1)[0])
            if ip is None:
                raise BlockedAddressError(host, result["host"], "unparseable")
            why = self.policy.refusal(host, ip, port or None)
            if why is not None:
                raise BlockedAddressError(host, str(ip), why)
        return results

    async def close(self) -> None:
        """Close the wrapped resolver."""
        await self.inner.close()


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is not sent: `reason` is machine-readable, `detail` says more."""

    reason: str
    detail: str


def target_refusal(url: URL, policy: OutboundPolicy) -> Refusal | None:
    """Why `url` must not be requested (not http(s), or a refused IP literal), else None.

    Host names are checked after resolution by `GuardedResolver`.
    """
    if url.scheme not in ("http", "https") or not url.host:
        return Refusal("invalid_url", f"{url!s} is not an absolute http or https URL")
    host = url.host
    ip = _parse_ip(host.split("%", 1)[0])
    if ip is None:
        if host.replace(".", "").isdigit():
            # 2130706433, 0177.1, 127.1: numeric forms that socket maps onto an address.
            return Refusal("invalid_url", f"{host} is not a canonical IPv4 address")
        return None
    why = policy.refusal(host, ip, url.port)
    if why is not None:
        return Refusal(blocked_reason(host, str(ip), why), "nothing was sent")
    return None
