"""Where a schedule's webhook may be sent: public addresses only, unless an operator allows a network.

Why: the worker POSTs to a URL a tenant chose; without this a tenant reaches the host's metadata
service (``http://169.254.169.254/``), its loopback services or the cluster's private network (server-
side request forgery). The host is resolved and every address checked at create/update (a 422) and
again at each send, where the request then goes to the checked address itself, so a DNS answer that
changes in between (DNS rebinding) cannot redirect it. ``LOWBIT_WEBHOOK_ALLOWED_NETWORKS`` (comma-
separated CIDRs) admits internal receivers.

>>> refused_reason(ipaddress.ip_address("169.254.169.254"), [])
'link-local'
>>> refused_reason(ipaddress.ip_address("10.1.2.3"), [ipaddress.ip_network("10.0.0.0/8")]) is None
True
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from service.errors import InvalidInputError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class WebhookTargetError(InvalidInputError):
    code = "webhook_target_refused"


@dataclass(frozen=True)
class WebhookTarget:
    """A checked target: connect to ``address`` (the checked IP), send ``host`` as Host/SNI."""

    url: str
    host: str
    address: IPAddress

    def pinned_url(self) -> str:
        """``url`` with its host replaced by the checked address (port, path and query kept)."""
        parts = urlsplit(self.url)
        ip = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        netloc = ip if parts.port is None else f"{ip}:{parts.port}"
        return parts._replace(netloc=netloc).geturl()


def allowed_networks(setting: str) -> list[IPNetwork]:
    """The networks of ``LOWBIT_WEBHOOK_ALLOWED_NETWORKS`` ("10.0.0.0/8,127.0.0.1/32")."""
    return [ipaddress.ip_network(part.strip(), strict=False) for part in setting.split(",") if part.strip()]


def refused_reason(address: IPAddress, allowed: Sequence[IPNetwork]) -> str | None:
    """Why ``address`` may not receive webhooks, or None."""
    if any(address in net for net in allowed):
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return refused_reason(address.ipv4_mapped, allowed)
    for reason in ("loopback", "link_local", "multicast", "private", "reserved", "unspecified"):
        if getattr(address, f"is_{reason}"):
            return reason.replace("_", "-")
    if not address.is_global:
        return "not public"
    return None


def check_webhook_target(url: str, allowed: Sequence[IPNetwork]) -> WebhookTarget:
    """Resolve ``url``'s host and check every address; WebhookTargetError says why a target is refused."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise WebhookTargetError("webhook_url must be an http:// or https:// URL with a host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise WebhookTargetError(f"webhook host {host!r} does not resolve ({exc})") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    for address in addresses:
        reason = refused_reason(address, allowed)
        if reason is not None:
            raise WebhookTargetError(
                f"webhook host {host!r} resolves to {address}, a {reason} address; accepted: public "
                "addresses (an operator can allow internal networks with LOWBIT_WEBHOOK_ALLOWED_NETWORKS)"
            )
    return WebhookTarget(url, host, addresses[0])
