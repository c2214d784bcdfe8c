"""Shared by the worker fault tests (tests/vms/test_faults_*.py): VMs installed, acted on and
retried through the operations engine, and host operations to fail on purpose."""

from __future__ import annotations

from datetime import timedelta

from operations.models import Operation, OperationKind
from operations.requests import operation_retry
from operations.runner import operation_run
from vms.models import VirtualMachine
from vms.services import lifecycle
from vms.services.workflow import vm_request_approve, vm_request_create

LONG_AGO = timedelta(hours=5)


def approved_vm(site, capture, name="lab1", requester=None):
    requester = requester or site.student
    req = vm_request_create(
        requester=requester, name=name, template=site.template, vcpus=1,
        memory_mib=512, disk_gib=2, purpose="faults", security_domain=site.domain,
        faculty=site.faculty if requester == site.student else None)
    with capture(execute=False):
        vm_request_approve(request=req, actor=site.admin)
    return VirtualMachine.objects.get(request=req)


def install(site, capture, **kw):
    vm = approved_vm(site, capture, **kw)
    op = operation_run(operation_id=vm.operations.get().pk)
    vm.refresh_from_db()
    return vm, op


def act(vm, kind, actor, capture):
    with capture(execute=False):
        op = lifecycle.vm_action_request(vm=vm, kind=kind, actor=actor)
    op = operation_run(operation_id=op.pk)
    vm.refresh_from_db()
    return op


def retry(op, actor, capture):
    with capture(execute=False):
        return operation_retry(operation=op, actor=actor)


def host_op(site, **kw):
    return Operation.objects.create(kind=OperationKind.HOST_REFRESH, host=site.host, **kw)
