"""Directory login: django-auth-ldap with the portal's roles, organisations and messages."""

from __future__ import annotations

import logging

import ldap
from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django_auth_ldap.backend import LDAPBackend, ldap_error, populate_user

from core.accounts.services import directory_profile_apply

logger = logging.getLogger(__name__)

# Errors that mean "could not talk to the directory", as opposed to "wrong password".
UNREACHABLE = (ldap.SERVER_DOWN, ldap.TIMEOUT, ldap.CONNECT_ERROR, ldap.UNAVAILABLE,
               ldap.BUSY)
UNAVAILABLE_MESSAGE = "The directory is unavailable; please try again later."


class PortalLDAPBackend(LDAPBackend):
    """Log people in with their directory password."""

    def authenticate(self, request, username=None, password=None, **kwargs):  # noqa: ANN001, ANN201
        """Refuse logins that cannot be a directory name before asking the directory."""
        if not settings.AUTH_LDAP_SERVER_URI or not username or not password:
            return None
        if "\x00" in username or "\x00" in password or len(username) > 150:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


@receiver(populate_user, sender=PortalLDAPBackend)
def _populate(sender: type, user, ldap_user, **kwargs) -> None:  # noqa: ANN001
    """Give a directory user the role of their groups and the organisation of their entry."""
    directory_profile_apply(
        user=user,
        group_dns={dn.lower() for dn in ldap_user.group_dns},
        attributes=ldap_user.attrs,
        role_groups=getattr(settings, "PORTAL_LDAP_ROLE_GROUPS", {}),
        org_attribute=getattr(settings, "PORTAL_LDAP_ORG_ATTRIBUTE", "ou"),
    )


@receiver(ldap_error, sender=PortalLDAPBackend)
def _remember_outage(sender: type, context: str, exception: Exception, request=None,  # noqa: ANN001
                     **kwargs) -> None:
    """Mark the request so the login page can say the directory, not the password, failed."""
    if isinstance(exception, UNREACHABLE):
        logger.warning("directory unreachable during %s: %s", context, exception)
        if request is not None:
            request.directory_unavailable = True


class PortalAuthenticationForm(AuthenticationForm):
    """The login form, telling a directory outage apart from a wrong password."""

    def clean(self) -> dict:
        """Authenticate, and say so plainly when the directory could not be asked."""
        try:
            return super().clean()
        except forms.ValidationError:
            if getattr(self.request, "directory_unavailable", False):
                raise forms.ValidationError(UNAVAILABLE_MESSAGE,
                                            code="directory_unavailable") from None
            raise


def lockout_message() -> str:
    """Return what the login page says to a locked-out account or address."""
    minutes = max(1, round(settings.AXES_COOLOFF_TIME.total_seconds() / 60))
    return (f"Too many failed logins for this account or address; try again in {minutes} "
            f"minute{'s' if minutes != 1 else ''} or ask an administrator to unlock it.")


def lockout_response(request: HttpRequest, original_response: HttpResponse | None = None,
                     credentials: dict | None = None) -> HttpResponse:
    """Answer a throttled login with the login page and its message, as 429 Too Many Requests."""
    form = PortalAuthenticationForm(request, initial={"username": request.POST.get("username",
                                                                               "")[:150]})
    return render(request, "registration/login.html",
                  {"form": form, "next": request.POST.get("next", ""),
                   "login_error": lockout_message()}, status=429)


def client_address(request: HttpRequest) -> str | None:
    """Return the client's address: REMOTE_ADDR, or X-Forwarded-For's behind PORTAL_PROXY_COUNT."""
    proxies = settings.PORTAL_PROXY_COUNT
    if proxies > 0:
        # Each proxy appends the address it was reached from, so the client is the
        # proxies-th from the right; anything left of it may be forged by the client.
        hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
                if h.strip()]
        if len(hops) >= proxies:
            return hops[-proxies]
    return request.META.get("REMOTE_ADDR")
