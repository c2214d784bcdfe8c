"""Directory login settings, read from the environment (django-auth-ldap)."""

from __future__ import annotations

from collections.abc import Mapping

TRUE = {"1", "true", "yes", "on"}
# First of every list: the login throttle refuses a locked-out account or address before any
# password is checked, and counts the failures of the backends after it.
THROTTLE_BACKEND = "axes.backends.AxesStandaloneBackend"
MODEL_BACKEND = "core.accounts.backends.LocalAccountBackend"
LDAP_BACKEND = "core.auth.PortalLDAPBackend"
# Last of every list: it logs nobody in, it answers the object permissions each application
# declares in its rules.py (`user.has_perm("vms.operate_vm", vm)`).
RULES_BACKEND = "rules.permissions.ObjectPermissionBackend"


def ldap_settings(environ: Mapping[str, str]) -> dict[str, object]:
    """Return the Django settings for directory login; local accounts only without a server."""
    uri = environ.get("LDAP_SERVER_URI", "").strip()
    if not uri:
        return {"AUTH_LDAP_SERVER_URI": "",
                "AUTHENTICATION_BACKENDS": [THROTTLE_BACKEND, MODEL_BACKEND, RULES_BACKEND]}

    import ldap
    from django_auth_ldap.config import (
        GroupOfNamesType,
        GroupOfUniqueNamesType,
        LDAPSearch,
        PosixGroupType,
    )

    timeout = float(environ.get("LDAP_TIMEOUT", "5"))
    options: dict[int, object] = {
        ldap.OPT_REFERRALS: 0,
        ldap.OPT_NETWORK_TIMEOUT: timeout,
        ldap.OPT_TIMEOUT: timeout,
        # Certificates are always checked; only the CA to trust is configurable.
        ldap.OPT_X_TLS_REQUIRE_CERT: ldap.OPT_X_TLS_DEMAND,
    }
    ca_file = environ.get("LDAP_CA_CERT_FILE", "").strip()
    if ca_file:
        options[ldap.OPT_X_TLS_CACERTFILE] = ca_file
    options[ldap.OPT_X_TLS_NEWCTX] = 0  # must come last: applies the TLS options above

    group_types = {"groupOfNames": GroupOfNamesType, "groupOfUniqueNames": GroupOfUniqueNamesType,
                   "posixGroup": PosixGroupType}
    group_type_name = environ.get("LDAP_GROUP_TYPE", "groupOfNames")
    if group_type_name not in group_types:
        raise ValueError(f"LDAP_GROUP_TYPE must be one of {', '.join(group_types)}")
    object_class = group_type_name
    out: dict[str, object] = {
        "AUTH_LDAP_SERVER_URI": uri,
        "AUTH_LDAP_BIND_DN": environ.get("LDAP_BIND_DN", ""),
        "AUTH_LDAP_BIND_PASSWORD": environ.get("LDAP_BIND_PASSWORD", ""),
        "AUTH_LDAP_START_TLS": environ.get("LDAP_START_TLS", "").lower() in TRUE,
        "AUTH_LDAP_CONNECTION_OPTIONS": options,
        "AUTH_LDAP_USER_ATTR_MAP": {
            "first_name": environ.get("LDAP_ATTR_FIRST_NAME", "givenName"),
            "last_name": environ.get("LDAP_ATTR_LAST_NAME", "sn"),
            "email": environ.get("LDAP_ATTR_EMAIL", "mail"),
        },
        "AUTH_LDAP_ALWAYS_UPDATE_USER": True,
        "AUTH_LDAP_FIND_GROUP_PERMS": False,
        "AUTH_LDAP_CACHE_TIMEOUT": 0,
        "AUTH_LDAP_GROUP_TYPE": group_types[group_type_name](),
        "PORTAL_LDAP_ORG_ATTRIBUTE": environ.get("LDAP_ORG_ATTRIBUTE", "ou"),
        "PORTAL_LDAP_ROLE_GROUPS": {
            role: environ.get(f"LDAP_ROLE_GROUP_{role.upper()}", "").strip().lower()
            for role in ("admin", "org_admin", "faculty")
        },
        "AUTHENTICATION_BACKENDS": [THROTTLE_BACKEND, LDAP_BACKEND, MODEL_BACKEND, RULES_BACKEND],
    }
    template = environ.get("LDAP_USER_DN_TEMPLATE", "").strip()
    if template:
        out["AUTH_LDAP_USER_DN_TEMPLATE"] = template
    else:
        # django-auth-ldap escapes the login before putting it into %(user)s.
        out["AUTH_LDAP_USER_SEARCH"] = LDAPSearch(
            environ.get("LDAP_USER_SEARCH_BASE", ""), ldap.SCOPE_SUBTREE,
            environ.get("LDAP_USER_FILTER", "(uid=%(user)s)"))
    group_base = environ.get("LDAP_GROUP_SEARCH_BASE", "").strip()
    if group_base:
        out["AUTH_LDAP_GROUP_SEARCH"] = LDAPSearch(group_base, ldap.SCOPE_SUBTREE,
                                                   f"(objectClass={object_class})")
    return out
