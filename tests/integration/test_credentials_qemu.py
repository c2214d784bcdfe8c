"""Hypervisor tier: a VM installed by the portal from the demo guest takes its owner's login.

One student adds an SSH key, requests a VM from the real guest with that key and a generated
password; the portal's install operation writes the cloud-init seed and boots it on
qemu:///system under an isolated network. From this host the test logs in by SSH at the IP
the VM page shows, hot-plugs and detaches a disk through the portal, shuts the VM down through
the portal (ACPI), and deletes it, seed and all.
"""

from __future__ import annotations

import ipaddress
import random
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.urls import reverse

from core.accounts.services import ssh_key_add
from hosts.models import Host
from hosts.virt import close_all
from networking.models import PrivateIP
from networking.ranges import private_range_add
from operations.models import Operation, OperationKind, OperationStatus
from operations.runner import operation_run
from tests.integration.guest import ssh_connect, ssh_run
from tests.integration.qemu import make_network
from vms.models import DiskState, ExtraDisk, RequestKind, VirtualMachine, VMState
from vms.services.changes import disk_action_request
from vms.services.lifecycle import vm_action_request
from vms.services.workflow import (
    vm_change_request_create,
    vm_request_approve,
    vm_request_create,
)

pytestmark = [pytest.mark.hypervisor, pytest.mark.django_db]
URI = "qemu:///system"


def virsh(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True,
                          timeout=120, check=check)


@pytest.fixture
def guest_site(site, guest_image: Path) -> Iterator:
    """Point the fast tier's site at qemu:///system, the demo guest and an isolated network."""
    close_all()
    workdir = Path(tempfile.mkdtemp(prefix="portaltest-", dir="/var/tmp"))
    workdir.chmod(0o755)  # qemu runs as another user and must reach the images
    shutil.copyfile(guest_image, workdir / "guest.qcow2")
    (workdir / "guest.qcow2").chmod(0o644)
    net, subnet = make_network(workdir, "10.214", random.randrange(100, 250))
    Host.objects.filter(pk=site.host.pk).update(uri=URI, accel="", vcpus=0, memory_mib=0)
    site.host.refresh_from_db()
    site.datastore.name = f"t{uuid.uuid4().hex[:6]}"
    site.datastore.path = str(workdir)
    site.datastore.save()
    site.template.image = "guest.qcow2"
    site.template.cloud_init = True
    site.template.save()
    site.vlan.network_name, site.vlan.subnet, site.vlan.attach = net, subnet, "network"
    site.vlan.save()
    PrivateIP.objects.filter(vlan=site.vlan).delete()
    base = ipaddress.IPv4Network(subnet).network_address
    private_range_add(vlan=site.vlan, first=str(base + 100), last=str(base + 104))
    refresh = Operation.objects.create(kind=OperationKind.HOST_REFRESH, host=site.host)
    assert operation_run(operation_id=refresh.pk).status == OperationStatus.SUCCEEDED
    site.host.refresh_from_db()
    try:
        yield site
    finally:
        for vm in VirtualMachine.objects.all():
            virsh("destroy", vm.domain_name)
            virsh("undefine", vm.domain_name, "--snapshots-metadata", "--nvram")
        pool = site.datastore.pool_name
        virsh("pool-destroy", pool)
        virsh("pool-undefine", pool)
        virsh("net-destroy", net)
        virsh("net-undefine", net)
        shutil.rmtree(workdir, ignore_errors=True)
        close_all()


def new_key() -> tuple[paramiko.PKey, str]:
    """Return a fresh Ed25519 key for paramiko and its public key line."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
    return paramiko.Ed25519Key.from_private_key(StringIO(pem)), f"{public} student@laptop"


def run_queued(vm: VirtualMachine) -> Operation:
    op = operation_run(operation_id=vm.operations.get(status=OperationStatus.QUEUED).pk)
    vm.refresh_from_db()
    return op


def block_devices(client: paramiko.SSHClient) -> list[str]:
    return ssh_run(client, "ls /sys/block").split()


def wait_until(check, what: str, timeout: float = 60) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.5)


def test_a_portal_vm_takes_its_owners_key_and_password_and_behaves(
        guest_site, django_capture_on_commit_callbacks, settings):
    settings.PORTAL = {**settings.PORTAL, "SHUTDOWN_TIMEOUT": 90}
    site, capture = guest_site, django_capture_on_commit_callbacks
    pkey, public = new_key()
    key = ssh_key_add(owner=site.student, name="laptop", public_key=public)
    name = f"pt-{uuid.uuid4().hex[:6]}"
    req = vm_request_create(
        requester=site.student, name=name, template=site.template, vcpus=1, memory_mib=256,
        disk_gib=1, purpose="credentials", security_domain=site.domain, faculty=site.faculty,
        ssh_keys=[key], generate_password=True)
    with capture(execute=False):
        vm_request_approve(request=req, actor=site.admin)
    vm = VirtualMachine.objects.get(request=req)
    op = run_queued(vm)
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.detail)
    assert vm.state == VMState.RUNNING
    seed = Path(site.datastore.path) / vm.seed_volume_name
    assert seed.exists()
    assert f"<source file='{seed}'" in virsh("dumpxml", name).stdout

    # What the owner reads on the VM page, and the password shown once.
    browser = site.client(site.student)
    page = browser.get(reverse("vms:vm_detail", args=[vm.pk])).content.decode()
    ip = re.search(r"ssh stu@([0-9.]+)<", page).group(1)
    assert ip == PrivateIP.objects.get(vm=vm).address
    shown = browser.post(reverse("vms:vm_password", args=[vm.pk])).content.decode()
    password = re.search(r'id="vm-password">([^<]+)<', shown).group(1)

    client = ssh_connect(ip, "stu", key=pkey, timeout=180)
    try:
        assert ssh_run(client, "hostname").strip() == name
        assert ssh_run(client, "id -un").strip() == "stu"
        by_password = ssh_connect(ip, "stu", password=password, timeout=30)
        by_password.close()

        # A disk added through the portal appears in the guest; its detach completes.
        before = block_devices(client)
        change = vm_change_request_create(requester=site.student, vm=vm, kind=RequestKind.DISK,
                                          purpose="data", faculty=site.faculty,
                                          params={"size_gib": 1})
        with capture(execute=False):
            vm_request_approve(request=change, actor=site.admin)
        op = run_queued(vm)
        assert op.status == OperationStatus.SUCCEEDED, (op.message, op.detail)
        disk = ExtraDisk.objects.get(vm=vm)
        assert disk.state == DiskState.ATTACHED and disk.target not in before
        wait_until(lambda: disk.target in block_devices(client), f"{disk.target} appearing")
        with capture(execute=False):
            disk_action_request(disk=disk, kind=OperationKind.DISK_DETACH, actor=site.student)
        op = run_queued(vm)
        assert op.status == OperationStatus.SUCCEEDED, (op.message, op.detail)
        assert disk.target not in block_devices(client)
    finally:
        client.close()

    # Shut down: the portal presses the ACPI button and the guest powers itself off.
    with capture(execute=False):
        vm_action_request(vm=vm, kind=OperationKind.SHUTDOWN, actor=site.student)
    op = run_queued(vm)
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.detail)
    assert vm.state == VMState.SHUTOFF
    assert virsh("domstate", name, "--reason").stdout.strip() == "shut off (shutdown)"

    with capture(execute=False):
        vm_action_request(vm=vm, kind=OperationKind.DELETE, actor=site.student)
    op = run_queued(vm)
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.detail)
    assert not seed.exists()
    assert not (Path(site.datastore.path) / vm.volume_name).exists()
    assert virsh("dominfo", name).returncode != 0
