"""E-mail to requesters and approvers, sent once the change is committed."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse

logger = logging.getLogger(__name__)


def notify(*, recipients: Iterable[str], subject: str, body: str) -> None:
    """Send an e-mail after the surrounding transaction commits."""
    to = sorted({r for r in recipients if r})
    if not to:
        return

    def _send() -> None:
        try:
            send_mail(f"[VM portal] {subject}", body, settings.DEFAULT_FROM_EMAIL, to)
        except Exception:  # a mail outage must not undo an approval
            logger.exception("could not send mail %r to %s", subject, to)

    transaction.on_commit(_send)


def absolute_url(name: str, *args: object) -> str:
    """Return the portal URL of a named view for use in mail."""
    return settings.PORTAL_BASE_URL.rstrip("/") + reverse(name, args=args)
