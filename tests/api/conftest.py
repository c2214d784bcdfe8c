"""Fixtures of the API tests: tokens for the site's people and clients that carry them."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from api.tokens import token_create


def token_client(user, *, read_only: bool = False) -> APIClient:
    """Return an API client that authenticates with a new token of the user."""
    _, text = token_create(owner=user, name="tests", read_only=read_only)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {text}")
    return client


@pytest.fixture
def api(site):
    """Return a function giving a token client for a role of the site (or a user)."""
    def make(who, *, read_only: bool = False) -> APIClient:
        user = site.users[who] if isinstance(who, str) else who
        return token_client(user, read_only=read_only)
    return make


def v1(path: str) -> str:
    """Return the API path under /api/v1/."""
    return f"/api/v1/{path.lstrip('/')}"


def run_queued(vm):
    """Run the VM's queued operation as a worker would; return it."""
    from operations.models import OperationStatus
    from operations.runner import operation_run

    op = vm.operations.filter(status=OperationStatus.QUEUED).get()
    operation_run(operation_id=op.pk)
    op.refresh_from_db()
    vm.refresh_from_db()
    return op


@pytest.fixture
def student_vm(site, django_capture_on_commit_callbacks):
    """Return the student's VM, approved by the whole chain and installed (running)."""
    from vms.models import VirtualMachine
    from vms.services.workflow import vm_request_approve, vm_request_create

    req = vm_request_create(
        requester=site.student, name="lab1", template=site.template, vcpus=1, memory_mib=512,
        disk_gib=2, purpose="course work", faculty=site.faculty, security_domain=site.domain)
    with django_capture_on_commit_callbacks(execute=False):
        for approver in (site.faculty, site.orgadmin, site.admin):
            req = vm_request_approve(request=req, actor=approver)
    vm = VirtualMachine.objects.get(request=req)
    run_queued(vm)
    assert vm.state == "running"
    return vm


@pytest.fixture(autouse=True)
def api_rate(settings):
    """Let the tests call as often as they like; the throttling test sets its own rate."""
    settings.PORTAL_API_RATE = "100000/minute"
