"""The local-account login, for people the directory does not manage."""

from __future__ import annotations

from django.contrib.auth.backends import ModelBackend


class LocalAccountBackend(ModelBackend):
    """Log in with a password kept in the portal, never for a directory account."""

    def user_can_authenticate(self, user) -> bool:  # noqa: ANN001
        """Refuse directory accounts: a local password must not outlive the directory's no."""
        return super().user_can_authenticate(user) and not getattr(user, "is_directory_user",
                                                                   False)
