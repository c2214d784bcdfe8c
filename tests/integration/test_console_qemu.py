"""Hypervisor tier: the console proxy in front of real qemu, VNC passwords and the serial stream.

A student's VM, installed by the portal from the demo guest, is reached through the proxy the
way a browser reaches it: a websocket with the page's Origin and the student's session, one
single-use token per console. The proxy authenticates to qemu's VNC with the VM's password and
offers the client security type None; the serial console comes through libvirt's stream.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
import uuid
import xml.etree.ElementTree as ET

import pytest
from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from console.models import ConsoleKind
from console.proxy import CLOSE_REFUSED, ConsoleProxy, Limits
from console.rfb import RFBError, authenticate_upstream
from console.services import console_token_issue
from hosts.virt import Hypervisor, SerialConsole
from hosts.virt.domain_xml import DomainSpec, build_domain_xml
from operations.models import OperationKind, OperationStatus
from operations.runner import operation_run
from tests.integration.qemu import unique, virsh
from tests.integration.test_credentials_qemu import guest_site  # noqa: F401 - fixture
from tests.integration.test_portal_qemu import install, real_site  # noqa: F401 - fixture
from tests.vms.test_vm_operations import approved_change, queued, take
from vms.models import RequestKind, VirtualMachine, VMState
from vms.services.lifecycle import vm_action_request
from vms.services.snapshots import snapshot_revert
from vms.services.workflow import vm_request_approve, vm_request_create

pytestmark = [pytest.mark.hypervisor, pytest.mark.django_db]
# The proxy reads tokens from another thread: it must see committed rows.
through_the_proxy = pytest.mark.django_db(transaction=True)
ORIGIN = "http://127.0.0.1:8000"  # PORTAL_BASE_URL's origin: the portal's own pages
BOOT_TIMEOUT = 120


def session_cookie(user) -> str:
    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store.create()
    return f"sessionid={store.session_key}"


def graphics_of(vm: VirtualMachine) -> ET.Element:
    xml = Hypervisor(vm.host.uri).domain_xml(vm.domain_name, secure=True)
    graphics = ET.fromstring(xml).find("devices/graphics")
    assert graphics is not None and graphics.get("type") == "vnc"
    return graphics


def security_types(port: int) -> bytes:
    """Return the security types qemu's VNC offers a client that connects directly."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        assert sock.recv(12).startswith(b"RFB 003.008")
        sock.sendall(b"RFB 003.008\n")
        count = sock.recv(1)[0]
        return sock.recv(count)


async def vnc_auth(vm: VirtualMachine, password: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", vm.vnc_port)
    try:
        await authenticate_upstream(reader, writer, password)
    finally:
        writer.close()


class Framebuffer:
    """The client side of RFB after the proxy's handshake: raw updates of a 32-bit screen."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.buffer = bytearray()

    async def read(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self.buffer += await asyncio.wait_for(self.ws.recv(), 30)
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def handshake(self) -> tuple[int, int]:
        assert await self.read(12) == b"RFB 003.008\n"
        await self.ws.send(b"RFB 003.008\n")
        assert await self.read(2) == bytes([1, 1])  # one type offered: None
        await self.ws.send(b"\x01")
        assert await self.read(4) == b"\0\0\0\0"
        await self.ws.send(b"\x01")  # ClientInit: shared
        width, height, pixel_format, name_length = struct.unpack(">HH16sI", await self.read(24))
        await self.read(name_length)
        assert pixel_format[0] == 32  # bits per pixel
        await self.ws.send(struct.pack(">BxHi", 2, 1, 0))  # SetEncodings: raw only
        return width, height

    async def lit_pixels(self, width: int, height: int) -> int:
        """Ask for the whole screen; return how many of its pixels are not black."""
        await self.ws.send(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))
        while True:
            kind = (await self.read(1))[0]
            if kind == 0:
                break
            assert kind in (1, 2, 3), f"unexpected server message {kind}"
            if kind == 2:  # Bell
                continue
            raise AssertionError(f"server message {kind} is not expected here")
        (count,) = struct.unpack(">xH", await self.read(3))
        lit = 0
        for _ in range(count):
            _x, _y, w, h, encoding = struct.unpack(">HHHHi", await self.read(12))
            if encoding != 0:  # a pseudo-encoding (desktop size, cursor) carries no pixels
                continue
            pixels = await self.read(w * h * 4)
            lit += sum(1 for i in range(0, len(pixels), 4) if pixels[i:i + 3] != b"\0\0\0")
        return lit


def guest_vm(site, capture) -> tuple[VirtualMachine, str]:
    """Install a student's VM from the demo guest with a generated password; return both."""
    name = unique("con")
    req = vm_request_create(requester=site.student, name=name, template=site.template,
                            vcpus=1, memory_mib=256, disk_gib=1, purpose="console",
                            security_domain=site.domain, faculty=site.faculty,
                            generate_password=True)
    with capture(execute=False):
        vm_request_approve(request=req, actor=site.admin)
    vm = VirtualMachine.objects.get(request=req)
    op = operation_run(operation_id=vm.operations.get().pk)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    vm.refresh_from_db()
    assert vm.state == VMState.RUNNING and vm.password_once and vm.login_user
    return vm, vm.password_once


def proxy_url(server) -> str:
    return f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


@through_the_proxy
def test_the_proxy_opens_a_real_vms_screen_once_per_token(
        guest_site, django_capture_on_commit_callbacks):  # noqa: F811
    site = guest_site
    vm, _password = guest_vm(site, django_capture_on_commit_callbacks)

    graphics = graphics_of(vm)
    assert graphics.get("passwd") == vm.vnc_password
    assert {graphics.get("listen")} | {e.get("address") for e in graphics.iter("listen")} == {
        "127.0.0.1"}
    assert security_types(vm.vnc_port) == bytes([2])  # qemu asks everyone for the password

    vnc_token = console_token_issue(user=site.student, vm=vm, kind=ConsoleKind.VNC)
    headers = {"Cookie": session_cookie(site.student)}

    async def scenario() -> None:
        proxy = ConsoleProxy(Limits(idle=300, longest=3600))
        async with proxy.serve("127.0.0.1", 0) as server:
            url = proxy_url(server)
            async with connect(f"{url}/vnc?token={vnc_token}", origin=ORIGIN,
                               subprotocols=["binary"], additional_headers=headers) as ws:
                screen = Framebuffer(ws)
                width, height = await screen.handshake()
                assert (width, height) >= (640, 400)
                lit = await screen.lit_pixels(width, height)
                deadline = time.monotonic() + BOOT_TIMEOUT
                while lit < 2000 and time.monotonic() < deadline:
                    await asyncio.sleep(1)
                    lit = await screen.lit_pixels(width, height)
                assert lit >= 2000, f"the screen stayed (nearly) black: {lit} lit pixels"

            async with connect(f"{url}/vnc?token={vnc_token}", origin=ORIGIN,
                               subprotocols=["binary"], additional_headers=headers) as ws:
                with pytest.raises(ConnectionClosed) as again:
                    await ws.recv()
            assert again.value.rcvd.code == CLOSE_REFUSED

    asyncio.run(scenario())


@through_the_proxy
def test_the_proxy_serial_console_logs_in_to_a_real_guest(
        guest_site, django_capture_on_commit_callbacks):  # noqa: F811
    site = guest_site
    vm, password = guest_vm(site, django_capture_on_commit_callbacks)
    serial_token = console_token_issue(user=site.student, vm=vm, kind=ConsoleKind.SERIAL)
    headers = {"Cookie": session_cookie(site.student)}

    async def scenario() -> None:
        proxy = ConsoleProxy(Limits(idle=300, longest=3600))
        async with proxy.serve("127.0.0.1", 0) as server:
            url = proxy_url(server)
            async with connect(f"{url}/serial?token={serial_token}", origin=ORIGIN,
                               additional_headers=headers) as ws:
                seen = ""

                async def expect(pattern: str, timeout: float = BOOT_TIMEOUT) -> None:
                    nonlocal seen
                    deadline = time.monotonic() + timeout
                    while pattern not in seen:
                        left = deadline - time.monotonic()
                        assert left > 0, f"the serial console never showed {pattern!r}: {seen!r}"
                        try:
                            seen += (await asyncio.wait_for(ws.recv(), min(left, 2))).decode(
                                "utf-8", "replace")
                        except TimeoutError:
                            await ws.send("\r")  # ask the guest for its prompt again
                    seen = seen[seen.index(pattern) + len(pattern):]

                await ws.send("\r")
                await expect(f"{vm.name} login:")
                await ws.send(f"{vm.login_user}\r")
                await expect("Password:", 30)
                await ws.send(f"{password}\r")
                await expect("$ ", 30)
                await ws.send("echo through-the-$((6*7))-proxy\r")
                await expect("through-the-42-proxy", 30)
                await ws.send("exit\r")

    asyncio.run(scenario())


def test_the_serial_stream_reads_what_the_guest_prints_from_its_first_byte(
        real_site):  # noqa: F811
    """The fast template's boot sector prints its message once, to COM1, and halts."""
    site = real_site
    hv = Hypervisor(site.host.uri)
    name = unique()
    # TCG: this is about the console stream, not about the host's acceleration.
    spec = DomainSpec(name=name, uuid=str(uuid.uuid4()), domain_type="qemu", vcpus=1,
                      memory_mib=64,
                      disk_path=f"{site.datastore.path}/base.qcow2")
    hv.define_domain(build_domain_xml(spec))
    try:
        # Started paused, so nothing is printed before the console is open.
        started = virsh("start", "--paused", name, check=False)
        assert started.returncode == 0, started.stderr
        console = SerialConsole(site.host.uri, name)
        hv.resume(name)
        text = b""
        deadline = time.monotonic() + 60
        while b"portal hypervisor test" not in text and time.monotonic() < deadline:
            text += console.read()
        console.close()
        assert b"portal hypervisor test" in text
        assert console.read() == b""  # a closed console reads nothing, at once
    finally:
        hv.destroy(name)
        hv.undefine_domain(name)


def test_the_vnc_password_survives_a_revert_and_a_clone_gets_its_own(
        real_site, django_capture_on_commit_callbacks):  # noqa: F811
    site, capture = real_site, django_capture_on_commit_callbacks
    vm, op = install(site, capture, unique("vnc"))
    try:
        password_survives_revert_and_clone(site, capture, vm, op)
    finally:
        # The site's clean-up cannot undefine a domain that still has snapshots.
        virsh("destroy", vm.domain_name, check=False)
        virsh("undefine", vm.domain_name, "--snapshots-metadata", check=False)


def password_survives_revert_and_clone(site, capture, vm, op) -> None:
    assert op.status == OperationStatus.SUCCEEDED, op.message
    assert graphics_of(vm).get("passwd") == vm.vnc_password

    snap, op = take(site, vm, capture, name="before")
    assert op.status == OperationStatus.SUCCEEDED, op.message
    snap.refresh_from_db()
    op = queued(vm, lambda: snapshot_revert(snapshot=snap, actor=site.admin), capture)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    assert graphics_of(vm).get("passwd") == vm.vnc_password
    assert security_types(vm.vnc_port) == bytes([2])
    asyncio.run(vnc_auth(vm, vm.vnc_password))
    with pytest.raises(RFBError, match="refused the password"):
        asyncio.run(vnc_auth(vm, "wrong"))

    with capture(execute=False):
        vm_action_request(vm=vm, kind=OperationKind.DESTROY, actor=site.admin)
    assert operation_run(operation_id=vm.operations.filter(
        status=OperationStatus.QUEUED).get().pk).status == OperationStatus.SUCCEEDED
    approved_change(site, vm, RequestKind.CLONE, capture, count=1)
    clone = VirtualMachine.objects.get(clone_of=vm)
    op = operation_run(operation_id=clone.operations.get().pk)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    clone.refresh_from_db()
    assert clone.vnc_password and clone.vnc_password != vm.vnc_password
    assert graphics_of(clone).get("passwd") == clone.vnc_password
    asyncio.run(vnc_auth(clone, clone.vnc_password))
    with pytest.raises(RFBError):
        asyncio.run(vnc_auth(clone, vm.vnc_password))
