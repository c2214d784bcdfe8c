"""Shared test plumbing.

Tier markers (`hypervisor`, `postgres`, `redis`, `ldap`, `browser`, `netns`) name a real service
a test needs. Before such a test sets up any fixture, the service is checked once per session.
When it is missing the test is skipped with the reason, except under CI (`CI=true` or `CI=1`),
where it fails instead: a tier whose service cannot start must never pass by skipping.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.tiers import MARKERS

# ---- tier plumbing ----

REPO_ROOT = Path(__file__).resolve().parent.parent
TIER_MARKERS = tuple(MARKERS)
CHROMIUM = "/usr/bin/chromium"
SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SSHD = "/usr/sbin/sshd"
MISSING_SERVICE_PROPERTY = "tier_service_missing"

# marker -> None when the service is usable, else the reason it is not (cached per session).
_service_status: dict[str, str | None] = {}


def running_under_ci() -> bool:
    """Tell whether a missing service must fail the test instead of skipping it."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def _virsh_version() -> str | None:
    virsh = shutil.which("virsh")
    if virsh is None:
        return "virsh is not installed (package libvirt-clients)"
    try:
        result = subprocess.run(
            [virsh, "-c", "qemu:///system", "version"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return "`virsh -c qemu:///system version` timed out"
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        return "`virsh -c qemu:///system version` failed: " + (detail[-1] if detail else "?")
    return None


def _check_hypervisor() -> str | None:
    for tool, package in (("qemu-img", "qemu-utils"), ("qemu-system-x86_64", "qemu-system-x86")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (package {package})"
    problem = _virsh_version()
    if problem is None:
        return None
    script = REPO_ROOT / "scripts" / "start-libvirtd.sh"
    try:
        subprocess.run(["bash", str(script)], capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        return f"{problem}; scripts/start-libvirtd.sh timed out"
    again = _virsh_version()
    return None if again is None else f"{again} (also after running scripts/start-libvirtd.sh)"


def _check_postgres() -> str | None:
    from django.db import connection

    if connection.vendor != "postgresql":
        return (
            f"the database is {connection.vendor}, not PostgreSQL; "
            "run with DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal"
        )
    return None


def _check_redis() -> str | None:
    url = os.environ.get("REDIS_URL", "").strip()
    if not url:
        return "REDIS_URL is not set (e.g. REDIS_URL=redis://127.0.0.1:6379/15)"
    try:
        import redis
    except ImportError:
        return "the redis Python package is not installed"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # any failure means the tier cannot run
        return f"Redis at {url} does not answer PING: {exc}"
    return None


def _check_ldap() -> str | None:
    for program in (SLAPD, SLAPADD):
        if not os.access(program, os.X_OK):
            return f"{program} is missing (packages slapd, ldap-utils)"
    if shutil.which("openssl") is None:
        return "openssl is not installed (package openssl; it makes the test CA)"
    for schema in ("core", "cosine", "nis", "inetorgperson"):
        if not os.path.exists(f"/etc/ldap/schema/{schema}.ldif"):
            return f"/etc/ldap/schema/{schema}.ldif is missing (package slapd)"
    if importlib.util.find_spec("ldap") is None:
        return "the python-ldap package is not installed"
    return None


def _check_browser() -> str | None:
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (Debian package chromium; never `playwright install`)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright Python package is not installed"
    try:
        import playwright.sync_api  # noqa: F401
    except Exception as exc:
        return f"playwright does not import: {exc}"
    return None


def _check_netns() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces and iptables need root"
    tools = (("ip", "iproute2"), ("iptables", "iptables"), ("ssh-keygen", "openssh-client"))
    for tool, package in tools:
        if shutil.which(tool) is None:
            return f"{tool} is not installed (package {package})"
    if not os.access(SSHD, os.X_OK):
        return f"{SSHD} is missing (package openssh-server)"
    return None


_CHECKS: dict[str, Callable[[], str | None]] = {
    "hypervisor": _check_hypervisor,
    "postgres": _check_postgres,
    "redis": _check_redis,
    "ldap": _check_ldap,
    "browser": _check_browser,
    "netns": _check_netns,
}


def service_problem(marker: str) -> str | None:
    """Return why the tier's service is unusable, or None; checked once per session."""
    if marker not in _service_status:
        try:
            _service_status[marker] = _CHECKS[marker]()
        except Exception as exc:
            _service_status[marker] = f"checking the {marker} service raised {exc!r}"
    return _service_status[marker]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Register the tier markers (tests/tiers.py holds them, for run-tests.sh too)."""
    for marker, needs in MARKERS.items():
        config.addinivalue_line("markers", f"{marker}: {needs}")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Check each tier service the test is marked with before any fixture is set up."""
    wanted = {mark.name for mark in item.iter_markers()} & set(TIER_MARKERS)
    for marker in TIER_MARKERS:
        if marker not in wanted:
            continue
        problem = service_problem(marker)
        if problem is None:
            continue
        message = f"[{marker} tier] service unavailable: {problem}"
        if running_under_ci():
            message += " (CI is set: a missing service fails, never skips)"
            item.user_properties.append((MISSING_SERVICE_PROPERTY, message))
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config):
    """Report a test failed for a missing tier service as FAILED, not as a setup ERROR."""
    if report.when == "setup" and report.failed:
        if any(name == MISSING_SERVICE_PROPERTY for name, _ in report.user_properties):
            return "failed", "F", "FAILED"
    return None


def pytest_report_header(config: pytest.Config) -> str:
    mode = "missing services FAIL (CI)" if running_under_ci() else "missing services skip"
    return f"tier markers: {', '.join(TIER_MARKERS)}; {mode}"


# ---- portal fixtures ----
pytest_plugins = ["tests.fixtures"]
