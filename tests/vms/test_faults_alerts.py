"""Workers under faults: the admins' mail and digest of failures, and the owner's plain words."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from core.errors import PortalError
from hosts.virt import Hypervisor, VirtError
from operations import registry
from operations.models import AdminAlert, OperationKind
from operations.reconcile import operations_reconcile
from operations.runner import operation_run
from tests.vms.faults_helpers import act, host_op, install

pytestmark = pytest.mark.django_db


# ---- telling people ----

def failing(monkeypatch, error):
    def handler(op):
        raise error

    monkeypatch.setattr(registry.SPECS[OperationKind.HOST_REFRESH], "handler", handler)


def test_admins_get_one_mail_at_once_then_a_digest_per_window(site, settings, monkeypatch):
    settings.PORTAL = {**settings.PORTAL, "ALERT_DIGEST_MINUTES": 15}
    failing(monkeypatch, VirtError("libvirt said no"))
    first = operation_run(operation_id=host_op(site).pk)
    assert len(mail.outbox) == 1 and site.admin.email in mail.outbox[0].to
    assert "libvirt said no" in mail.outbox[0].body
    second = operation_run(operation_id=host_op(site).pk)
    third = operation_run(operation_id=host_op(site).pk)
    assert len(mail.outbox) == 1  # collected for the next digest
    for op in (first, second, third):
        op.refresh_from_db()
    assert (first.admin_alert, second.admin_alert, third.admin_alert) == (
        "sent", "pending", "pending")

    from operations.alerts import alerts_flush

    assert alerts_flush() == 0  # the window has not passed
    later = timezone.now() + timedelta(minutes=16)
    assert alerts_flush(now=later) == 2
    assert len(mail.outbox) == 2 and "2 operations failed" in mail.outbox[1].subject
    assert f"#{second.pk}" in mail.outbox[1].body and f"#{third.pk}" in mail.outbox[1].body
    assert alerts_flush(now=later + timedelta(minutes=30)) == 0


def test_a_digest_that_cannot_be_sent_keeps_its_failures_for_the_next(site, monkeypatch):
    failing(monkeypatch, VirtError("libvirt said no"))

    def outage(*args, **kwargs):
        raise OSError("mail server down")

    monkeypatch.setattr("operations.alerts.send_mail", outage)
    op = operation_run(operation_id=host_op(site).pk)
    op.refresh_from_db()
    assert op.status == "failed" and op.admin_alert == AdminAlert.PENDING
    monkeypatch.undo()
    assert operations_reconcile()["alerted"] == 1
    op.refresh_from_db()
    assert op.admin_alert == AdminAlert.SENT and len(mail.outbox) == 1


def test_a_failure_the_owner_asked_for_tells_the_owner_in_plain_words(
        site, django_capture_on_commit_callbacks, monkeypatch):
    capture = django_capture_on_commit_callbacks
    vm, _ = install(site, capture, requester=site.student)
    mail.outbox.clear()
    monkeypatch.setattr(Hypervisor, "reboot", lambda self, n: (_ for _ in ()).throw(
        VirtError("QEMU assertion `x' failed")))
    with capture(execute=True):
        act(vm, OperationKind.REBOOT, site.student, capture)
    to_owner = [m for m in mail.outbox if m.to == [site.student.email]]
    assert len(to_owner) == 1 and "could not be rebooted" in to_owner[0].body
    assert "QEMU" not in to_owner[0].body
    to_admins = [m for m in mail.outbox if site.admin.email in m.to]
    assert len(to_admins) == 1 and "QEMU assertion" in to_admins[0].body


def test_a_refusal_in_plain_words_needs_no_admin(site, monkeypatch):
    failing(monkeypatch, PortalError("Shut it down first."))
    op = operation_run(operation_id=host_op(site).pk)
    op.refresh_from_db()
    assert op.status == "failed" and op.admin_alert == AdminAlert.NONE and not mail.outbox


def test_an_admins_action_on_a_students_vm_does_not_mail_the_student(
        site, django_capture_on_commit_callbacks, monkeypatch):
    capture = django_capture_on_commit_callbacks
    vm, _ = install(site, capture, requester=site.student)
    mail.outbox.clear()
    monkeypatch.setattr(Hypervisor, "reboot", lambda self, n: (_ for _ in ()).throw(
        VirtError("no")))
    with capture(execute=True):
        act(vm, OperationKind.REBOOT, site.admin, capture)
    assert not [m for m in mail.outbox if m.to == [site.student.email]]
