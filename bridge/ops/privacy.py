"""Nothing leaves the server: telemetry off in every dependency, and only allowed hosts contacted."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from bridge.config import Settings
from bridge.intake.platforms import Endpoint, enabled_platforms

# Networks that stay inside a home or a data centre. Python's is_private also admits documentation and
# reserved ranges, which are not "ours", so the list is explicit.
PRIVATE_NETWORKS = [
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16",
              "fc00::/7", "fe80::/10")
]  # fmt: skip


def is_private(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return any(address in network for network in PRIVATE_NETWORKS)


class HostNotAllowed(Exception):
    pass


def endpoints(settings: Settings) -> list[Endpoint]:
    """Every remote host the configuration makes Confide contact, and whether it may."""
    found: list[tuple[str, str]] = [
        (f"model {name}", url) for name, m in settings.models.items() for url in m.base_urls
    ]
    if settings.state_url is not None:
        found.append(("state", without_credentials(settings.state_url.get_secret_value())))
    if settings.embedder.backend == "openai" and settings.embedder.base_url:
        found.append(("embedder", settings.embedder.base_url))
    if settings.transcriber.backend == "openai" and settings.transcriber.base_url:
        found.append(("transcriber", settings.transcriber.base_url))
    if settings.store.backend == "server" and settings.store.url:
        found.append(("store", settings.store.url))
    if settings.energy.source == "prometheus" and settings.energy.prometheus_url:
        found.append(("energy prometheus", settings.energy.prometheus_url))
    if settings.proxy_url:
        found.append(("proxy (every HTTP client)", settings.proxy_url))
    judged = [_judge(purpose, url, settings.allowed_hosts) for purpose, url in found]
    return judged + platform_endpoints(settings)


def without_credentials(url: str) -> str:
    """A URL as it may be shown and logged: its user and password left out."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return parts._replace(netloc=netloc).geturl()


def platform_endpoints(settings: Settings) -> list[Endpoint]:
    """Chat platforms are reached where the operator configured them: each platform lists its own hosts."""
    return [e for p in enabled_platforms(settings) for e in p.endpoints(getattr(settings, p.name))]


def check_endpoints(settings: Settings) -> list[Endpoint]:
    checked = endpoints(settings)
    refused = [e for e in checked if not e.allowed]
    if refused:
        lines = [f"  {e.purpose}: {e.url} ({e.why})" for e in refused]
        raise HostNotAllowed(
            "Refusing to start: these endpoints are outside loopback and private networks:\n"
            + "\n".join(lines)
            + "\nIf you trust them, name their hosts in CONFIDE_ALLOWED_HOSTS (comma-separated)."
        )
    return checked


def _judge(purpose: str, url: str, allowed_hosts: list[str]) -> Endpoint:
    host = (urlsplit(url).hostname or "").lower()
    if not host:
        return Endpoint(purpose, url, host, False, "no host in URL")
    if host in allowed_hosts:
        return Endpoint(purpose, url, host, True, "named in CONFIDE_ALLOWED_HOSTS")
    addresses = _addresses(host)
    if not addresses:
        return Endpoint(purpose, url, host, False, "cannot be resolved, and not in CONFIDE_ALLOWED_HOSTS")
    public = [a for a in addresses if not (a.is_loopback or is_private(a))]
    if public:
        return Endpoint(purpose, url, host, False, f"resolves to public address {public[0]}")
    kind = "loopback" if all(a.is_loopback for a in addresses) else "private network"
    return Endpoint(purpose, url, host, True, kind)


def _addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return []
    return [ipaddress.ip_address(info[4][0]) for info in infos]
