"""How the API knows who asks: a personal token (Bearer) or the pages' session with CSRF."""

from __future__ import annotations

from rest_framework import authentication, exceptions
from rest_framework.request import Request

from .tokens import token_check


class TokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer vmp_…`: the request acts as the token's owner, nothing more."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple | None:
        """Return (owner, token) for a valid token, None without one; refuse a bad one."""
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "Give the token after 'Bearer' with one space and nothing else.")
        try:
            text = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("The token is not valid.") from None
        token = token_check(text)
        if token is None:
            raise exceptions.AuthenticationFailed(
                "The token is not valid: it is unknown, revoked or expired.")
        return token.owner, token

    def authenticate_header(self, request: Request) -> str:
        """Tell clients without credentials which scheme to use (401, not 403)."""
        return f'{self.keyword} realm="api"'
