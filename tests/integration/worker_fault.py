"""A worker process for the fault-injection test, run as `python worker_fault.py <command>`.

Each command runs in its own process on the SQLite file named by DATABASE_URL, with
DJANGO_SETTINGS_MODULE=tests.settings, and prints one line of JSON (the last line of stdout):

  setup <workdir> <network> <subnet> <suffix>
      migrate, record a site on qemu:///system, approve a VM (its install is only queued)
  install <op>
      run the install; the define step waits to be killed
  reconcile <op> <vm>
      once the worker's heartbeat is stale, run the reconciler and read the VM's page

Only the test patches anything, and only inside this process: the product code keeps no
fault-injection switch.
"""

from __future__ import annotations

import ipaddress
import json
import sys
import time


def _setup(workdir: str, network: str, subnet: str, suffix: str) -> dict:
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    import django_q.tasks

    # Only record the install here (the test settings would run it at once): the worker
    # process started next runs it.
    django_q.tasks.async_task = lambda *args, **kwargs: None

    from core.accounts.models import Role
    from hosts.demo_image import build_template_image
    from networking.ranges import private_range_add
    from operations.models import Operation, OperationKind
    from operations.runner import operation_run
    from tests import factories as f
    from vms.models import VirtualMachine
    from vms.services.workflow import vm_request_approve, vm_request_create

    build_template_image(f"{workdir}/base.qcow2", "portal fault test")
    org = f.OrganisationFactory(name="Faults", slug="faults")
    student = f.UserFactory(username="stu", role=Role.USER, organisation=org)
    faculty = f.UserFactory(username="fac", role=Role.FACULTY, organisation=org)
    admin = f.UserFactory(username="adm", role=Role.ADMIN, organisation=org, is_staff=True,
                          is_superuser=True)
    host = f.HostFactory(name="hv1", uri="qemu:///system", accel="", vcpus=0, memory_mib=0)
    ds = f.DatastoreFactory(name=f"f{suffix}", path=workdir,
                            hosts=[host])
    template = f.TemplateFactory(name="Base", datastore=ds, image="base.qcow2",
                                 min_memory_mib=64)
    vlan = f.VLANFactory(name="faults", tag=77, subnet=subnet, network_name=network,
                         attach="network")
    base = ipaddress.IPv4Network(subnet).network_address
    private_range_add(vlan=vlan, first=str(base + 100), last=str(base + 104))
    domain = f.SecurityDomainFactory(name="Faults", vlan=vlan, organisations=[org])
    refresh = Operation.objects.create(kind=OperationKind.HOST_REFRESH, host=host)
    refreshed = operation_run(operation_id=refresh.pk)
    assert refreshed.status == "succeeded", refreshed.message
    req = vm_request_create(requester=student, faculty=faculty, name=f"pf-{suffix}",
                            template=template, vcpus=1, memory_mib=64, disk_gib=1,
                            purpose="fault test", security_domain=domain)
    vm_request_approve(request=req, actor=admin)
    vm = VirtualMachine.objects.get(request=req)
    op = vm.operations.get(kind=OperationKind.INSTALL)
    return {"vm": vm.pk, "op": op.pk, "name": vm.name, "volume": vm.volume_name,
            "pool": ds.pool_name}


def _install(op_id: int) -> dict:
    from hosts.virt import Hypervisor
    from operations.models import Operation
    from operations.runner import operation_run

    def define_waits_to_be_killed(self, xml):  # noqa: ANN001, ANN202
        # The disk and the DHCP entry are made; show that the heartbeat goes on, then wait.
        first = Operation.objects.get(pk=op_id).heartbeat_at
        deadline = time.monotonic() + 60
        while Operation.objects.get(pk=op_id).heartbeat_at == first:
            if time.monotonic() > deadline:
                print("NO HEARTBEAT", flush=True)
                break
            time.sleep(0.1)
        else:
            print("BEATING", flush=True)
        time.sleep(3600)

    Hypervisor.define_domain = define_waits_to_be_killed
    op = operation_run(operation_id=op_id)
    return {"error": "the install was not killed", "status": op.status, "message": op.message,
            "detail": op.detail, "progress": op.progress}


def _reconcile(op_id: int, vm_id: int) -> dict:
    from django.conf import settings
    from django.test import Client
    from django.urls import reverse
    from django.utils import timezone

    from core.accounts.models import User
    from networking.models import PrivateIP
    from operations.models import Operation
    from operations.reconcile import operations_reconcile
    from vms.models import VirtualMachine

    stale_after = settings.PORTAL["HEARTBEAT_STALE_AFTER"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        beat = Operation.objects.get(pk=op_id).heartbeat_at
        if (timezone.now() - beat).total_seconds() > stale_after:
            break
        time.sleep(0.2)
    before = Operation.objects.get(pk=op_id)
    result = operations_reconcile()
    op = Operation.objects.get(pk=op_id)
    vm = VirtualMachine.objects.get(pk=vm_id)
    settings.ALLOWED_HOSTS = ["testserver"]  # what the test client calls itself
    pages = {}
    for username in ("adm", "stu"):
        client = Client()
        client.force_login(User.objects.get(username=username))
        pages[username] = client.get(reverse("vms:vm_detail", args=[vm_id])).content.decode()
    return {
        "status_before": before.status, "steps_before": [s["step"] for s in before.steps],
        "reconcile": result, "status": op.status, "message": op.message, "steps": op.steps,
        "vm_state": vm.state, "attention": vm.attention, "vm_host": vm.host_id,
        "ips_held": PrivateIP.objects.filter(vm=vm).count(),
        "admin_retry": 'data-action="retry"' in pages["adm"],
        "admin_delete": 'data-action="delete-attention"' in pages["adm"],
        "owner_delete": 'data-action="delete-attention"' in pages["stu"],
        "owner_sees_attention": "Needs attention" in pages["stu"],
    }


def main(argv: list[str]) -> None:
    import django

    django.setup()
    command, args = argv[0], argv[1:]
    if command == "setup":
        out = _setup(*args)
    elif command == "install":
        out = _install(int(args[0]))
    elif command == "reconcile":
        out = _reconcile(int(args[0]), int(args[1]))
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
