"""Every URL for every role and for anonymous: allowed or denied, and nothing unlisted."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from api.tokens import token_create
from operations.models import Operation, OperationKind, OperationStatus
from tests.api.matrix import API_ROUTES
from vms.models import ExtraDisk, Snapshot, VirtualMachine, VMState
from vms.services.workflow import vm_request_create

ROLES = ("anon", "student", "faculty", "orgadmin", "admin", "other_student", "other_orgadmin")
LOGIN = 302  # anonymous users are sent to the login page
OK, GO, NO = 200, 302, 404


def row(ok=(), go=(), anon=LOGIN, default=NO):
    """Expected status per role: 200 for `ok`, 302 for `go`, `default` for the rest."""
    out = {r: default for r in ROLES}
    out.update({r: OK for r in ok})
    out.update({r: GO for r in go})
    out["anon"] = anon
    return out


EVERYONE = ("student", "faculty", "orgadmin", "admin", "other_student", "other_orgadmin")
SEES_REQUEST = ("student", "faculty", "orgadmin", "admin")
SEES_VM = ("student", "faculty", "orgadmin", "admin")

# name -> (method, object the URL takes, expected status per role)
MATRIX = {
    "dashboard": ("get", None, row(ok=EVERYONE)),
    "login": ("get", None, row(go=EVERYONE, anon=OK)),
    "logout": ("post", None, row(go=EVERYONE, anon=GO)),
    "vms:request_list": ("get", None, row(ok=EVERYONE)),
    "vms:request_create": ("get", None, row(ok=EVERYONE)),
    "vms:request_detail": ("get", "request", row(ok=SEES_REQUEST)),
    # The requester reaches the service, which says they cannot decide their own request.
    "vms:request_approve": ("post", "request", row(go=("student", "faculty", "admin"))),
    "vms:request_reject": ("post", "request", row(go=("student", "faculty", "admin"))),
    "vms:request_cancel": ("post", "request", row(go=("student",))),
    "vms:approvals": ("get", None, row(ok=EVERYONE)),
    "vms:vm_list": ("get", None, row(ok=EVERYONE)),
    "vms:vm_detail": ("get", "vm", row(ok=SEES_VM)),
    "vms:vm_status": ("get", "vm", row(ok=SEES_VM)),
    "vms:vm_login": ("get", "vm", row(ok=SEES_VM)),
    "vms:vm_password": ("post", "vm", row(go=("student",))),  # the owner alone, not admins
    "vms:vm_action": ("post", "vm_action", row(go=("student", "orgadmin", "admin"))),
    "vms:vm_change_network": ("get", "vm", row(ok=("student", "orgadmin", "admin"))),
    "vms:vm_change_public_ip": ("get", "vm", row(ok=("student", "orgadmin", "admin"))),
    "vms:vm_change_ssh_port": ("get", "vm", row(ok=("student", "orgadmin", "admin"))),
    "vms:vm_change_resize": ("get", "vm", row(ok=("student", "orgadmin", "admin"))),
    "vms:vm_change_disk": ("get", "vm", row(ok=("student", "orgadmin", "admin"))),
    "vms:vm_change_clone": ("get", "vm", row(ok=("student", "orgadmin", "admin"))),
    "vms:snapshot_create": ("post", "vm", row(go=("student", "orgadmin", "admin"))),
    "vms:snapshot_revert": ("post", "snapshot", row(go=("student", "orgadmin", "admin"))),
    "vms:snapshot_delete": ("post", "snapshot", row(go=("student", "orgadmin", "admin"))),
    "vms:snapshot_schedule": ("post", "vm", row(go=("student", "orgadmin", "admin"))),
    "vms:disk_detach": ("post", "disk", row(go=("student", "orgadmin", "admin"))),
    "vms:disk_delete": ("post", "disk", row(go=("student", "orgadmin", "admin"))),
    "vms:vm_save_template": ("post", "vm", row(go=("admin",))),
    "vms:vm_migrate": ("post", "vm", row(go=("admin",))),
    "vms:operation_cancel": ("post", "operation", row(go=("admin",))),
    "vms:operation_list": ("get", None, row(ok=EVERYONE)),
    "vms:cloud": ("get", None, row(ok=("admin",))),
    "vms:cloud_shutdown": ("post", None, row(go=("admin",))),
    "vms:cloud_bootup": ("post", None, row(go=("admin",))),
    "vms:operation_retry": ("post", "operation", row(go=("admin",))),
    "vms:operation_dismiss": ("post", "operation", row(go=("admin",))),
    "console:vnc": ("get", "vm", row(ok=("student", "orgadmin", "admin"))),
    "console:serial": ("get", "vm", row(ok=("student", "orgadmin", "admin"))),
    "console:serial_token": ("post", "vm", row(ok=("student", "orgadmin", "admin"))),
    # The matrix's VM has no VNC port: its operators hear why (409); the rest see nothing.
    "console:vnc_token": ("post", "vm", {**row(), **dict.fromkeys(
        ("student", "orgadmin", "admin"), 409)}),
    "hosts:host_list": ("get", None, row(ok=("admin",))),
    "hosts:host_detail": ("get", "host", row(ok=("admin",))),
    "hosts:host_refresh": ("post", "host", row(go=("admin",))),
    "hosts:host_maintenance": ("post", "host", row(go=("admin",))),
    "hosts:host_maintenance_leave": ("post", "host", row(go=("admin",))),
    "hosts:host_mark_up": ("post", "host", row(go=("admin",))),
    "hosts:host_evacuate": ("post", "host", row(go=("admin",))),
    "hosts:host_power_on": ("post", "host", row(go=("admin",))),
    "hosts:host_power_off": ("post", "host", row(go=("admin",))),
    "vms:host_domain_adopt": ("get", "host", row(ok=("admin",))),
    "vms:host_domain_delete": ("post", "host", row(go=("admin",))),
    "vms:host_volume_delete": ("post", "host", row(go=("admin",))),
    "vms:vm_mark_lost": ("post", "vm", row(go=("admin",))),
    "vms:vm_recreate": ("post", "vm", row(go=("admin",))),
    "vms:host_respawn": ("post", "host", row(go=("admin",))),
    "monitoring:vm_usage": ("get", "vm", row(ok=SEES_VM)),
    "monitoring:vm_graph_png": ("get", "vm_graph", row(ok=SEES_VM)),
    "monitoring:vm_graph_svg": ("get", "vm_graph", row(ok=SEES_VM)),
    "monitoring:host_usage": ("get", "host", row(ok=("admin",))),
    "monitoring:host_graph_png": ("get", "host_graph", row(ok=("admin",))),
    "monitoring:host_graph_svg": ("get", "host_graph", row(ok=("admin",))),
    "accounts:people_list": ("get", None, row(ok=("orgadmin", "admin", "other_orgadmin"))),
    "accounts:person_detail": ("get", "person", row(ok=("orgadmin", "admin"))),
    "accounts:person_unlock": ("post", "person", row(go=("admin",))),
    "accounts:organisation_list": ("get", None, row(ok=("admin",))),
    "accounts:faculty_search": ("get", None, row(ok=EVERYONE)),
    "accounts:ssh_key_list": ("get", None, row(ok=EVERYONE)),
    "accounts:ssh_key_delete": ("post", "ssh_key", row(go=("student",))),
    "tokens:token_list": ("get", None, row(ok=EVERYONE)),
    "tokens:token_revoke": ("post", "api_token", row(go=("student", "admin"))),
    "networking:overview": ("get", None, row(ok=("admin",))),
    "networking:vlan_detail": ("get", "vlan", row(ok=("admin",))),
    "networking:public_pool": ("get", None, row(ok=("admin",))),
    "networking:nat_resync": ("post", None, row(go=("admin",))),
    # Django admin: staff only; everyone else is sent to its login page.
    "admin:index": ("get", None, row(ok=("admin",),
                                     go=tuple(r for r in EVERYONE if r != "admin"))),
}


def url_names(resolver: URLResolver | None = None, prefix: str = "") -> set[str]:
    """Return every named URL of the portal, with its namespace."""
    names = set()
    for p in (resolver or get_resolver()).url_patterns:
        if isinstance(p, URLResolver):
            ns = f"{prefix}{p.namespace}:" if p.namespace else prefix
            names |= url_names(p, ns)
        elif isinstance(p, URLPattern) and p.name:
            names.add(prefix + p.name)
    return names


def test_the_matrix_lists_every_url():
    portal_urls = {n for n in url_names() if not n.startswith(("admin:", "api:"))}
    assert portal_urls - set(MATRIX) == set(), "add these URLs to the permission matrix"
    # The API's routes, per method and for a read-only token too: tests/api/matrix.py.
    assert {n for n in url_names() if n.startswith("api:")} == API_ROUTES
    assert set(MATRIX) - portal_urls - {"admin:index"} == set()


@pytest.fixture
def objects(site, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        req = vm_request_create(
            requester=site.student, name="matrix", template=site.template, vcpus=1,
            memory_mib=512, disk_gib=2, purpose="x", faculty=site.faculty,
            security_domain=site.domain)
        other = vm_request_create(
            requester=site.student, name="matrix-vm", template=site.template, vcpus=1,
            memory_mib=512, disk_gib=2, purpose="x", faculty=site.faculty,
            security_domain=site.domain)
        vm = VirtualMachine.objects.create(
            name="matrix-vm", owner=site.student, organisation=site.org, request=other,
            template=site.template, host=site.host, vcpus=1, memory_mib=512, disk_gib=2,
            state=VMState.RUNNING)
        other.stage = "approved"
        other.save()
        op = Operation.objects.create(kind=OperationKind.START, vm=vm,
                                      status=OperationStatus.FAILED, message="x")
        snapshot = Snapshot.objects.create(vm=vm, name="s", state="ready")
        disk = ExtraDisk.objects.create(vm=vm, datastore=site.datastore, size_gib=1,
                                        state="attached", target="vdb")
    return {"request": req, "vm": vm, "operation": op, "host": site.host, "vlan": site.vlan,
            "snapshot": snapshot, "disk": disk, "ssh_key": _student_key(site),
            "person": site.student,
            "api_token": token_create(owner=site.student, name="matrix")[0]}


def _student_key(site):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from core.accounts.services import ssh_key_add

    line = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return ssh_key_add(owner=site.student, name="laptop", public_key=line)


def url_for(name, kind, objects):
    if kind is None:
        return reverse(name)
    if kind == "vm_action":
        return reverse(name, args=[objects["vm"].pk, "suspend"])
    if kind in ("snapshot", "disk"):
        return reverse(name, args=[objects["vm"].pk, objects[kind].pk])
    if kind in ("vm_graph", "host_graph"):
        return reverse(name, args=[objects[kind.split("_")[0]].pk, "cpu", "day"])
    return reverse(name, args=[objects[kind].pk])


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", sorted(MATRIX))
def test_permission_matrix(site, objects, django_capture_on_commit_callbacks, name, role):
    method, kind, expected = MATRIX[name]
    client = site.client(None if role == "anon" else site.users[role])
    url = url_for(name, kind, objects)
    data = {"seen_stage": "faculty", "reason": "matrix"} if "request_" in name else {}
    data["confirmed"] = "1"  # past the confirmation of destructive actions (tested below)
    with django_capture_on_commit_callbacks(execute=False):
        response = getattr(client, method)(url, data)
    assert response.status_code == expected[role], (name, role, response.status_code)
    if role == "anon" and expected[role] == LOGIN and name != "logout":
        assert response["Location"].startswith(reverse("login") if not name.startswith(
            "admin:") else reverse("admin:login"))


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(n for n, (m, _, _) in MATRIX.items() if m == "post"))
def test_state_changes_refuse_get(site, objects, name):
    _, kind, _ = MATRIX[name]
    response = site.client(site.admin).get(url_for(name, kind, objects))
    assert response.status_code == 405


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(n for n, (m, _, _) in MATRIX.items() if m == "post"))
def test_state_changes_need_a_csrf_token(site, objects, name):
    _, kind, _ = MATRIX[name]
    client = Client(enforce_csrf_checks=True)
    client.force_login(site.admin)
    response = client.post(url_for(name, kind, objects), {"seen_stage": "faculty"})
    assert response.status_code == 403


# Destructive actions: their unconfirmed POST shows whoever may act a confirmation page (200)
# and changes nothing; everyone else gets what the confirmed POST gets.
CONFIRMED = ("vms:request_cancel", "vms:snapshot_revert", "vms:snapshot_delete",
             "vms:disk_delete", "vms:vm_action", "vms:cloud_shutdown")


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", CONFIRMED)
def test_destructive_actions_ask_first(site, objects, django_capture_on_commit_callbacks, name,
                                       role):
    _, kind, expected = MATRIX[name]
    client = site.client(None if role == "anon" else site.users[role])
    url = url_for(name, kind, objects)
    if kind == "vm_action":
        url = reverse(name, args=[objects["vm"].pk, "destroy"])
    before = Operation.objects.count()
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(url)
    want = OK if expected[role] == GO and role != "anon" else expected[role]
    assert response.status_code == want, (name, role, response.status_code)
    if want == OK:
        assert 'name="confirmed" value="1"' in response.content.decode()
    assert Operation.objects.count() == before
