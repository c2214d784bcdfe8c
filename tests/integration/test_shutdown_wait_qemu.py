"""A real guest that ignores ACPI shut down (the boot-sector image has no OS to hear the
button): the wait ends in the owner's words, or gives way to Force off asked for during it."""

from __future__ import annotations

import time

import pytest

from operations.models import Operation, OperationKind, OperationStatus
from operations.runner import operation_run, operation_superseded
from tests.integration import test_portal_qemu as portal_qemu
from tests.integration.test_portal_qemu import act, domstate, install, suffix
from vms.models import VMState
from vms.services import lifecycle

pytestmark = [pytest.mark.hypervisor, pytest.mark.django_db]
real_site = portal_qemu.real_site  # the fixture: qemu:///system, a datastore, a network


def test_an_ignored_shut_down_fails_in_plain_words_and_stays_off_the_attention_list(
        real_site, django_capture_on_commit_callbacks, settings):
    settings.PORTAL = {**settings.PORTAL, "SHUTDOWN_TIMEOUT": 3}
    name = f"pt-{suffix()}"
    vm, op = install(real_site, django_capture_on_commit_callbacks, name)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    op = act(vm, OperationKind.SHUTDOWN, real_site, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.FAILED and op.routine
    assert op.message == (
        f"{name} did not shut down within 3 s; the guest may ignore ACPI requests. Use Force "
        "off (like pulling the power plug) or shut it down from inside.")
    assert "qemu:///system" in op.detail and "qemu:///system" not in op.message
    assert not Operation.objects.needing_attention().filter(pk=op.pk).exists()
    assert vm.state == VMState.RUNNING and domstate(name) == "running"


def test_force_off_during_the_wait_ends_the_shut_down_then_powers_the_guest_off(
        real_site, django_capture_on_commit_callbacks, settings, monkeypatch):
    settings.PORTAL = {**settings.PORTAL, "SHUTDOWN_TIMEOUT": 120}
    capture = django_capture_on_commit_callbacks
    name = f"pt-{suffix()}"
    vm, op = install(real_site, capture, name)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    polls = []

    def poll(op):
        # The owner, seeing the guest still running a moment into the wait, asks for Force off.
        polls.append(domstate(name))
        if len(polls) == 4:
            with capture(execute=False):
                lifecycle.vm_action_request(vm=vm, kind=OperationKind.DESTROY,
                                            actor=real_site.admin)
        return operation_superseded(op)

    monkeypatch.setattr(lifecycle, "operation_superseded", poll)
    with capture(execute=False):
        asked = lifecycle.vm_action_request(vm=vm, kind=OperationKind.SHUTDOWN,
                                            actor=real_site.admin)
    started = time.monotonic()
    operation_run(operation_id=asked.pk)
    waited = time.monotonic() - started
    assert polls[:4] == ["running"] * 4 and len(polls) <= 6
    assert waited < 30  # not the 120 s timeout
    shut = Operation.objects.get(pk=asked.pk)
    force = vm.operations.get(kind=OperationKind.DESTROY)
    assert shut.status == OperationStatus.SUCCEEDED
    assert shut.message == "Shut down gave way to Force off." and shut.superseded_by == force
    assert domstate(name) == "running"  # the shut down left the guest to the Force off

    force = operation_run(operation_id=force.pk)
    vm.refresh_from_db()
    assert force.status == OperationStatus.SUCCEEDED, force.message
    assert vm.state == VMState.SHUTOFF and domstate(name) == "shut off"
    assert not Operation.objects.active().filter(vm=vm).exists()
