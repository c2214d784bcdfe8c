"""Failed operations that need admins: one digest mail at most once per window."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from .models import AdminAlert, AlertDigest, Operation

logger = logging.getLogger(__name__)

ADMIN_DIGEST = "admins"
DIGEST_MOST = 50  # operations listed one by one in a digest; the rest are counted


def _admin_emails() -> list[str]:
    from core.accounts.models import Role

    return list(get_user_model().objects.filter(
        Q(role=Role.ADMIN) | Q(is_superuser=True), is_active=True,
    ).exclude(email="").values_list("email", flat=True))


def _digest_entry(op: Operation) -> str:
    target = op.vm or op.host or "-"
    when = timezone.localtime(op.finished_at or op.updated_at).strftime("%Y-%m-%d %H:%M")
    lines = [f"#{op.pk} {op.get_kind_display()} of {target}, {when}:", f"  {op.message}"]
    if op.detail:
        lines.append(f"  {op.detail}")
    return "\n".join(lines)


def alerts_flush(*, now: datetime | None = None) -> int:
    """Mail admins one digest of the failures waiting for them, at most once per window.

    The first failure after a quiet window goes out at once; later ones wait in their rows
    (`admin_alert` pending) until the window has passed and the next failure or reconcile
    pass flushes them. Rows are marked sent only once the mail has gone, so none is lost.
    Returns how many failures the mail carried (0 when nothing was sent).
    """
    now = now or timezone.now()
    window = timedelta(minutes=settings.PORTAL["ALERT_DIGEST_MINUTES"])
    AlertDigest.objects.get_or_create(name=ADMIN_DIGEST)
    with transaction.atomic():
        digest = AlertDigest.objects.select_for_update().get(name=ADMIN_DIGEST)
        if digest.last_sent_at is not None and now - digest.last_sent_at < window:
            return 0
        pending = Operation.objects.filter(admin_alert=AdminAlert.PENDING)
        ids = list(pending.order_by("finished_at", "id").values_list("pk", flat=True))
        if not ids:
            return 0
        shown = list(Operation.objects.filter(pk__in=ids[:DIGEST_MOST])
                     .select_related("vm", "host").order_by("finished_at", "id"))
        to = _admin_emails()
        if to:
            if len(ids) == 1:
                op = shown[0]
                subject = f"{op.get_kind_display()} of {op.vm or op.host or '-'} failed"
            else:
                subject = f"{len(ids)} operations failed"
            body = "\n\n".join(_digest_entry(op) for op in shown)
            if len(ids) > len(shown):
                body += f"\n\n… and {len(ids) - len(shown)} more."
            page = settings.PORTAL_BASE_URL.rstrip("/") + reverse("vms:operation_list")
            body += f"\n\nOperations needing attention: {page}?attention=1"
            # Sent inside the lock: a mail that cannot go leaves the rows pending for the
            # next flush, and two workers never send the same digest.
            send_mail(f"[VM portal] {subject}", body, settings.DEFAULT_FROM_EMAIL, sorted(to))
        else:
            logger.warning("no admin has an e-mail address; %d failure(s) not mailed", len(ids))
        Operation.objects.filter(pk__in=ids).update(admin_alert=AdminAlert.SENT)
        digest.last_sent_at = now
        digest.save(update_fields=["last_sent_at"])
    return len(ids)


def alerts_flush_quietly() -> int:
    """Flush the admins' digest; a mail outage is logged, the failures stay pending."""
    try:
        return alerts_flush()
    except Exception:
        logger.exception("could not mail the admins' digest of failed operations; retried "
                         "at the next failure or reconcile")
        return 0
