"""Measure how soon a student can use a new VM: approval -> SSH login, Console -> first frame.

Runs the portal in this process on a fresh SQLite database under a temporary var folder,
with `demo_setup` on this machine's libvirtd (qemu:///system, the demo guest, libvirt's
`default` network, datastore `bench`). A student with an ed25519 key asks for a VM with a
generated password; the admin approves it and the install operation runs as a worker would
run it. The clock then runs until an SSH login with the student's key on the IP the portal
gave answers `hostname`. For the console, the clock runs from the token (what clicking
Console asks the portal for) through the console proxy's websocket and its VNC handshake to
the first framebuffer update. Both are compared with their budgets (DESIGN.md): an SSH login
within 20 s of the approval under TCG, a first console frame within 1 s.

    make bench        (or: PYTHONPATH=. .venv/bin/python bench/usable_vm.py)
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import sys
import tempfile
import time
from io import StringIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
VAR = Path(tempfile.mkdtemp(prefix="portal-bench-", dir="/var/tmp"))
VAR.chmod(0o755)  # qemu runs as another user and must reach the datastore below
os.environ["PORTAL_VAR_DIR"] = str(VAR)
os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings"
os.environ.pop("DATABASE_URL", None)
os.environ.pop("REDIS_URL", None)
os.environ["EMAIL_URL"] = "memorymail://"  # the owner's "VM is ready" mail stays in memory
os.environ.setdefault("LOG_LEVEL", "ERROR")
os.environ.setdefault("PORTAL_GUEST_CACHE", str(ROOT / "var" / "guest-cache"))

SSH_BUDGET_S = 20.0
FRAME_BUDGET_S = 1.0
SSH_DEADLINE_S = 180.0
ORIGIN = "http://127.0.0.1:8000"


def setup():  # noqa: ANN201
    """Migrate, load the demo on this machine and probe it; return the demo's accounts."""
    import django

    django.setup()
    from django.core.management import call_command

    from core.accounts.models import User

    call_command("migrate", verbosity=0)
    call_command("demo_setup", "--datastore-name", "bench", "--first-ip", free_addresses(8),
                 "--count", "8", verbosity=0)
    drain()
    return {u.username: u for u in User.objects.filter(
        username__in=["student", "faculty", "orgadmin", "admin"])}


def free_addresses(size: int) -> str:
    """Return the first of size addresses of the default network that nobody holds or leases."""
    import re
    import subprocess

    def virsh(*args: str) -> str:
        return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True,
                              text=True, check=True, timeout=60).stdout

    # dnsmasq keeps a lease an hour after its VM is gone and gives that address to no other MAC.
    taken = set(re.findall(r"192\.168\.122\.(\d+)", virsh("net-dhcp-leases", "default")
                           + virsh("net-dumpxml", "default")))
    for start in range(150, 250 - size):
        if not {str(n) for n in range(start, start + size)} & taken:
            return f"192.168.122.{start}"
    raise SystemExit("no free block of addresses in libvirt's default network")


def drain() -> None:
    """Run every queued operation once, as a worker would."""
    from operations.models import Operation, OperationStatus
    from operations.runner import operation_run

    for op in Operation.objects.filter(status=OperationStatus.QUEUED).order_by("pk"):
        operation_run(operation_id=op.pk)


def make_key():  # noqa: ANN201
    """Return (paramiko key, OpenSSH public line) of a new ed25519 key."""
    import paramiko
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
    return paramiko.Ed25519Key.from_private_key(StringIO(pem)), f"{public} bench@portal"


def ssh_login(address: str, user: str, key) -> str:  # noqa: ANN001
    """Log in with the key and return what `hostname` answers; raise OSError until it works."""
    import paramiko

    client = paramiko.SSHClient()
    # A guest made a moment ago: its host key cannot be known yet; nothing secret is sent.
    client.set_missing_host_key_policy(paramiko.MissingHostKeyPolicy())  # noqa: S507
    try:
        client.connect(address, username=user, pkey=key, timeout=3, banner_timeout=3,
                       auth_timeout=3, look_for_keys=False, allow_agent=False)
        _in, out, _err = client.exec_command("hostname", timeout=10)
        return out.read().decode().strip()
    except (paramiko.SSHException, EOFError) as exc:
        raise OSError(str(exc)) from exc
    finally:
        client.close()


def approval_to_ssh(accounts: dict) -> tuple[object, float, float]:
    """Request, approve and install a VM; return it, seconds to running and to SSH login."""
    from core.accounts.services import ssh_key_add
    from hosts.models import Template
    from networking.models import SecurityDomain
    from vms.models import VirtualMachine
    from vms.services.workflow import vm_request_approve, vm_request_create

    key, public = make_key()
    ssh_key = ssh_key_add(owner=accounts["student"], name="bench", public_key=public)
    template = Template.objects.get(name="Tiny demo guest")
    domain = SecurityDomain.objects.filter(vlan__network_name="default").first()
    name = f"bench-{os.getpid()}"
    request = vm_request_create(
        requester=accounts["student"], name=name, template=template, vcpus=1,
        memory_mib=256, disk_gib=1, purpose="benchmark", security_domain=domain,
        faculty=accounts["faculty"], ssh_keys=[ssh_key], generate_password=True)
    started = time.monotonic()
    vm_request_approve(request=request, actor=accounts["admin"])
    drain()
    running = time.monotonic() - started
    vm = VirtualMachine.objects.get(request=request)
    address = vm.private_ip.address
    while True:
        try:
            answered = ssh_login(address, vm.login_user, key)
            break
        except OSError:
            if time.monotonic() - started > SSH_DEADLINE_S:
                raise
            time.sleep(0.25)
    login = time.monotonic() - started
    if answered != vm.name:
        raise SystemExit(f"the guest answered {answered!r}, not {vm.name!r}")
    return vm, running, login


async def first_frame(vm, student) -> float:  # noqa: ANN001
    """Return seconds from a console token to the first framebuffer update through the proxy."""
    from asgiref.sync import sync_to_async
    from django.contrib.auth import SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore
    from websockets.asyncio.client import connect

    from console.models import ConsoleKind
    from console.proxy import ConsoleProxy, Limits
    from console.services import console_token_issue

    def cookie() -> str:
        store = SessionStore()
        store[SESSION_KEY] = str(student.pk)
        store.create()
        return f"sessionid={store.session_key}"

    headers = {"Cookie": await sync_to_async(cookie)()}
    proxy = ConsoleProxy(Limits(idle=60, longest=600))
    async with proxy.serve("127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        started = time.monotonic()
        token = await sync_to_async(console_token_issue)(user=student, vm=vm,
                                                         kind=ConsoleKind.VNC)
        async with connect(f"ws://127.0.0.1:{port}/vnc?token={token}", origin=ORIGIN,
                           subprotocols=["binary"], additional_headers=headers) as ws:
            buffer = bytearray()

            async def read(size: int) -> bytes:
                while len(buffer) < size:
                    buffer.extend(await asyncio.wait_for(ws.recv(), 30))
                data = bytes(buffer[:size])
                del buffer[:size]
                return data

            await read(12)
            await ws.send(b"RFB 003.008\n")
            count = (await read(1))[0]
            await read(count)
            await ws.send(b"\x01")  # security None, as the proxy offers
            await read(4)
            await ws.send(b"\x01")  # ClientInit: shared
            width, height, _format, name_length = struct.unpack(">HH16sI", await read(24))
            await read(name_length)
            await ws.send(struct.pack(">BxHi", 2, 1, 0))  # SetEncodings: raw
            await ws.send(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))
            while (await read(1))[0] != 0:  # until a FramebufferUpdate begins
                pass
            return time.monotonic() - started


def teardown(vm) -> None:  # noqa: ANN001
    """Delete the VM through the portal and remove the benchmark's pool and folder."""
    import subprocess

    from operations.models import OperationKind
    from vms.services.lifecycle import vm_action_request

    if vm is not None:
        vm.refresh_from_db()
        vm_action_request(vm=vm, kind=OperationKind.DELETE, actor=vm.owner)
        drain()
    for args in (["pool-destroy", "portal-bench"], ["pool-undefine", "portal-bench"]):
        subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True,
                       check=False, timeout=60)
    shutil.rmtree(VAR, ignore_errors=True)


def main() -> None:
    """Print both figures and their ratio to the budget."""
    vm = None
    try:
        accounts = setup()
        from hosts.models import Host

        host = Host.objects.get()
        print(f"host: {host.accel or '?'} acceleration, CPU mode {host.cpu_mode or 'default'}")
        vm, running, login = approval_to_ssh(accounts)
        print(f"approval -> running:   {running:6.2f} s")
        print(f"approval -> SSH login: {login:6.2f} s  (budget {SSH_BUDGET_S:.0f} s: "
              f"{login / SSH_BUDGET_S:.2f} of it)")
        frames = [asyncio.run(first_frame(vm, accounts["student"])) for _ in range(5)]
        frames.sort()
        print(f"Console -> first frame: median {frames[2] * 1000:6.1f} ms, worst "
              f"{frames[-1] * 1000:6.1f} ms of 5  (budget {FRAME_BUDGET_S * 1000:.0f} ms: "
              f"{frames[2] / FRAME_BUDGET_S:.3f} of it)")
    except OSError as exc:
        raise SystemExit(f"benchmark failed: {exc}") from exc
    finally:
        teardown(vm)


if __name__ == "__main__":
    main()
