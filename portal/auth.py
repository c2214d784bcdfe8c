"""Directory login: django-auth-ldap with the portal's roles, organisations and messages."""

from __future__ import annotations

import logging

import ldap
from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.dispatch import receiver
from django_auth_ldap.backend import LDAPBackend, ldap_error, populate_user

from portal.accounts.services import directory_profile_apply

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
