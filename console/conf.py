"""The console's settings, read in one place: where the proxy listens and whom it serves."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest
from django.http.request import split_domain_port, validate_host


def listen_address(value: str | None = None) -> tuple[str, int]:
    """Return the (host, port) in value, by default PORTAL_CONSOLE_LISTEN, for the proxy."""
    value = settings.PORTAL_CONSOLE_LISTEN if value is None else value
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"PORTAL_CONSOLE_LISTEN {value!r} is not host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


def public_url(request: HttpRequest) -> str:
    """Return the ws(s) URL, without a trailing slash, that browsers reach the proxy at."""
    configured = settings.PORTAL_CONSOLE_URL.strip()
    if configured:
        return configured.rstrip("/")
    # Derived: the host name the browser already uses, on the proxy's port, with TLS when the
    # page has it (a TLS terminator must then sit on that port; see the README).
    domain, _port = split_domain_port(request.get_host())
    if ":" in domain and not domain.startswith("["):
        domain = f"[{domain}]"
    scheme = "wss" if request.is_secure() else "ws"
    return f"{scheme}://{domain or '127.0.0.1'}:{listen_address()[1]}"


def websocket_origin(request: HttpRequest) -> str:
    """Return the ws(s)://host:port origin of the proxy, for the console page's connect-src."""
    return _origin_of(public_url(request))


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""


def origin_allowed(origin: str | None) -> bool:
    """Return whether a websocket opened by a page of this origin may use the console."""
    if not origin or origin == "null":
        return False
    origin = origin.strip().lower()
    explicit = [_origin_of(o) or o.lower() for o in settings.PORTAL_CONSOLE_ALLOWED_ORIGINS]
    if explicit:
        return origin in explicit
    if origin in {_origin_of(settings.PORTAL_BASE_URL),
                  *(_origin_of(o) for o in settings.CSRF_TRUSTED_ORIGINS)}:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if settings.SESSION_COOKIE_SECURE and parts.scheme != "https":
        return False
    # The site's own host names, never the "*" wildcard: a wildcard would let any page in.
    hosts = [h for h in settings.ALLOWED_HOSTS if h != "*"]
    domain, _port = split_domain_port(parts.netloc)
    return bool(domain) and validate_host(domain, hosts)
