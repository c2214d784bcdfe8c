"""Look-ups in the directory beyond login: finding faculty, creating their accounts."""

from __future__ import annotations

import logging

from django.conf import settings

from .models import User

logger = logging.getLogger(__name__)


def directory_enabled() -> bool:
    """Return whether a directory is configured."""
    return bool(getattr(settings, "AUTH_LDAP_SERVER_URI", ""))


def _connection():  # noqa: ANN202 - an ldap connection object
    import ldap

    conn = ldap.initialize(settings.AUTH_LDAP_SERVER_URI)
    for option, value in getattr(settings, "AUTH_LDAP_CONNECTION_OPTIONS", {}).items():
        conn.set_option(option, value)
    if getattr(settings, "AUTH_LDAP_START_TLS", False):
        conn.start_tls_s()
    conn.simple_bind_s(settings.AUTH_LDAP_BIND_DN, settings.AUTH_LDAP_BIND_PASSWORD)
    return conn


def directory_faculty_search(text: str, *, organisation: str) -> list[dict[str, str]]:
    """Return faculty of the organisation whose name or login contains text, from the directory."""
    if not directory_enabled() or not text:
        return []
    import ldap
    from ldap.filter import escape_filter_chars

    group = settings.PORTAL_LDAP_ROLE_GROUPS.get("faculty", "")
    search = getattr(settings, "AUTH_LDAP_USER_SEARCH", None)
    if not group or search is None:
        return []
    t = escape_filter_chars(text)
    org_attr = escape_filter_chars(settings.PORTAL_LDAP_ORG_ATTRIBUTE)
    query = (f"(&(|(uid=*{t}*)(cn=*{t}*)(givenName=*{t}*)(sn=*{t}*))"
             f"({org_attr}={escape_filter_chars(organisation)}))")
    try:
        conn = _connection()
        try:
            entries = conn.search_st(search.base_dn, ldap.SCOPE_SUBTREE, query,
                                     ["uid", "cn"], timeout=5, sizelimit=50)
            members = _group_members(conn, group)
        finally:
            conn.unbind_s()
    except ldap.LDAPError as exc:
        logger.warning("directory search for faculty failed: %s", exc)
        return []
    out = []
    for dn, attrs in entries:
        if not dn or dn.lower() not in members:
            continue
        uid = (attrs.get("uid") or [b""])[0].decode()
        name = (attrs.get("cn") or [uid.encode()])[0].decode()
        if uid:
            out.append({"username": uid, "name": name})
    return out


def _group_members(conn, group_dn: str) -> set[str]:  # noqa: ANN001
    import ldap

    result = conn.search_st(group_dn, ldap.SCOPE_BASE, "(objectClass=*)",
                            ["member", "uniqueMember"], timeout=5)
    members: set[str] = set()
    for _, attrs in result:
        for key in ("member", "uniqueMember"):
            members |= {v.decode().lower() for v in attrs.get(key, [])}
    return members


def directory_user_fetch(username: str) -> User | None:
    """Create or update a person's account from the directory, without their password."""
    if not directory_enabled() or not username or "\x00" in username:
        return None
    from core.auth import PortalLDAPBackend

    try:
        return PortalLDAPBackend().populate_user(username)
    except Exception:  # the directory may be down; the caller reports "not found"
        logger.exception("could not read %s from the directory", username)
        return None
