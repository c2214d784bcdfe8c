"""Console tokens, pages and settings: who gets a token, and how long and how often it works."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from django.core.checks import Error, Warning
from django.urls import reverse

from console import checks
from console.models import ConsoleKind, ConsoleToken
from console.services import (
    ConsoleRefused,
    console_session_close,
    console_token_issue,
    console_token_redeem,
)
from core.errors import PortalError
from hosts.virt import VirtError, vnc_listen_address
from hosts.virt.domain_xml import DomainSpec, build_domain_xml
from tests.vms.test_lifecycle import run_pending
from vms.models import VirtualMachine, VMState
from vms.services.workflow import vm_request_approve, vm_request_create

pytestmark = pytest.mark.django_db
ORIGIN = "http://127.0.0.1:8000"


def student_vm(site, capture, name="lab1") -> VirtualMachine:
    """Install a running VM owned by the student, with the faculty as its request's faculty."""
    req = vm_request_create(requester=site.student, name=name, template=site.template,
                            vcpus=1, memory_mib=512, disk_gib=2, purpose="console tests",
                            security_domain=site.domain, faculty=site.faculty)
    with capture(execute=False):
        vm_request_approve(request=req, actor=site.admin)
    vm = VirtualMachine.objects.get(request=req)
    run_pending(vm)
    vm.refresh_from_db()
    assert vm.state == VMState.RUNNING and vm.vnc_port
    return vm


@pytest.fixture
def vm(site, django_capture_on_commit_callbacks) -> VirtualMachine:
    return student_vm(site, django_capture_on_commit_callbacks)


def session_of(user) -> str:
    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store.create()
    return store.session_key


def redeem(token, user, kind=ConsoleKind.VNC, origin=ORIGIN):
    return console_token_redeem(token=token, kind=kind, origin=origin,
                                session_key=session_of(user))


# --- tokens ------------------------------------------------------------------------------------

def test_a_token_is_random_long_and_stored_only_as_its_hash(site, vm):
    tokens = {console_token_issue(user=site.student, vm=vm, kind=ConsoleKind.VNC)
              for _ in range(20)}
    assert len(tokens) == 20
    assert all(len(t) >= 43 for t in tokens)  # 32 random bytes, URL-safe base64
    stored = set(ConsoleToken.objects.values_list("token_hash", flat=True))
    assert stored == {hashlib.sha256(t.encode()).hexdigest() for t in tokens}
    row = ConsoleToken.objects.first()
    assert all(t not in json.dumps(list(ConsoleToken.objects.values()), default=str)
               for t in tokens)
    assert (row.user, row.vm, row.host, row.kind) == (site.student, vm, site.host, "vnc")
    assert timedelta(0) < row.expires_at - row.created_at <= timedelta(seconds=60)


def test_a_token_opens_its_console_once(site, vm):
    token = console_token_issue(user=site.student, vm=vm, kind=ConsoleKind.VNC)
    target = redeem(token, site.student)
    assert (target.domain, target.vnc_port, target.vnc_password) == (
        vm.domain_name, vm.vnc_port, vm.vnc_password)
    assert target.vnc_address == "127.0.0.1"
    with pytest.raises(ConsoleRefused, match="used already or has expired"):
        redeem(token, site.student)
    console_session_close(token_id=target.token_id)
    with pytest.raises(ConsoleRefused):  # closing does not make it new again
        redeem(token, site.student)
    row = ConsoleToken.objects.get()
    assert (row.uses, row.open_connections, row.origin) == (1, 0, ORIGIN)


def test_an_expired_token_is_refused(site, vm):
    token = console_token_issue(user=site.student, vm=vm, kind=ConsoleKind.VNC)
    row = ConsoleToken.objects.get()
    row.expires_at = row.created_at - timedelta(seconds=1)
    row.save()
    with pytest.raises(ConsoleRefused, match="expired"):
        redeem(token, site.student)


def test_a_token_lasts_as_long_as_the_setting_says(site, vm, settings):
    settings.PORTAL_CONSOLE_TOKEN_SECONDS = 5
    console_token_issue(user=site.student, vm=vm, kind=ConsoleKind.SERIAL)
    row = ConsoleToken.objects.get()
    assert row.expires_at - row.created_at <= timedelta(seconds=5)


def test_a_token_opens_only_its_own_kind_of_console(site, vm):
    token = console_token_issue(user=site.student, vm=vm, kind=ConsoleKind.SERIAL)
    with pytest.raises(ConsoleRefused):
        redeem(token, site.student, kind=ConsoleKind.VNC)
    assert redeem(token, site.student, kind=ConsoleKind.SERIAL).kind == "serial"


def test_another_users_session_cannot_use_a_token(site, vm):
    token = console_token_issue(user=site.student, vm=vm, kind=ConsoleKind.VNC)
    with pytest.raises(ConsoleRefused, match="another login"):
        redeem(token, site.other_student)
    with pytest.raises(ConsoleRefused, match="another login"):
        console_token_redeem(token=token, kind="vnc", origin=ORIGIN, session_key=None)
    # The refusals above rolled back: the token is still good for its own user.
    assert redeem(token, site.student).user_id == site.student.pk


def test_a_token_from_another_origin_is_refused_and_kept(site, vm):
    token = console_token_issue(user=site.student, vm=vm, kind=ConsoleKind.VNC)
    for origin in ("https://evil.example", None, "null", "http://127.0.0.1.evil.example:8000"):
        with pytest.raises(ConsoleRefused, match="may not open consoles"):
            redeem(token, site.student, origin=origin)
    assert ConsoleToken.objects.get().uses == 0


def test_origins_come_from_the_sites_hosts_or_the_setting(settings):
    from console.conf import origin_allowed

    settings.ALLOWED_HOSTS = ["portal.example.org", ".campus.example", "*"]
    settings.PORTAL_BASE_URL = "http://127.0.0.1:8000"
    assert origin_allowed("http://portal.example.org")
    assert origin_allowed("https://lab.campus.example:8443")
    assert origin_allowed("http://127.0.0.1:8000")
    assert not origin_allowed("http://elsewhere.example")  # "*" never lets any page in
    settings.SESSION_COOKIE_SECURE = True
    assert not origin_allowed("http://portal.example.org")
    assert origin_allowed("https://portal.example.org")
    settings.PORTAL_CONSOLE_ALLOWED_ORIGINS = ["https://console.example.org/"]
    assert origin_allowed("https://console.example.org")
    assert not origin_allowed("https://portal.example.org")


def test_tokens_are_limited_per_token_and_per_user(site, vm, settings):
    settings.PORTAL_CONSOLE_PER_TOKEN = 2
    settings.PORTAL_CONSOLE_PER_USER = 2
    token = console_token_issue(user=site.student, vm=vm, kind=ConsoleKind.VNC)
    first, second = redeem(token, site.student), redeem(token, site.student)
    with pytest.raises(ConsoleRefused):
        redeem(token, site.student)  # a third connection on the same token
    other = console_token_issue(user=site.student, vm=vm, kind=ConsoleKind.SERIAL)
    with pytest.raises(ConsoleRefused, match="2 consoles open already"):
        redeem(other, site.student, kind=ConsoleKind.SERIAL)
    console_session_close(token_id=first.token_id)
    assert redeem(other, site.student, kind=ConsoleKind.SERIAL).kind == "serial"
    console_session_close(token_id=second.token_id)


def test_an_admin_may_open_any_console_but_a_viewer_never_gets_a_token(site, vm):
    assert console_token_issue(user=site.admin, vm=vm, kind=ConsoleKind.VNC)
    assert console_token_issue(user=site.orgadmin, vm=vm, kind=ConsoleKind.VNC)
    for user in (site.faculty, site.other_student, site.other_orgadmin):
        with pytest.raises(PortalError, match="may not open"):
            console_token_issue(user=user, vm=vm, kind=ConsoleKind.VNC)
    assert ConsoleToken.objects.count() == 2


def test_a_token_is_refused_once_its_user_may_no_longer_operate_the_vm(site, vm):
    token = console_token_issue(user=site.orgadmin, vm=vm, kind=ConsoleKind.VNC)
    site.orgadmin.role = "user"
    site.orgadmin.save()
    with pytest.raises(ConsoleRefused, match="no longer"):
        redeem(token, site.orgadmin)


def test_a_stopped_vm_has_no_console(site, vm):
    VirtualMachine.objects.filter(pk=vm.pk).update(state=VMState.SHUTOFF)
    vm.refresh_from_db()
    with pytest.raises(PortalError, match="shut off"):
        console_token_issue(user=site.student, vm=vm, kind=ConsoleKind.SERIAL)


def test_a_token_of_a_vm_stopped_since_is_refused(site, vm):
    token = console_token_issue(user=site.student, vm=vm, kind=ConsoleKind.VNC)
    VirtualMachine.objects.filter(pk=vm.pk).update(state=VMState.SHUTOFF)
    with pytest.raises(ConsoleRefused, match="shut off"):
        redeem(token, site.student)


# --- pages -------------------------------------------------------------------------------------

def test_the_owner_sees_console_buttons_and_gets_a_websocket_url(site, vm):
    client = site.client(site.student)
    detail = client.get(reverse("vms:vm_detail", args=[vm.pk])).content.decode()
    assert reverse("console:vnc", args=[vm.pk]) in detail
    assert reverse("console:serial", args=[vm.pk]) in detail
    page = client.get(reverse("console:vnc", args=[vm.pk])).content.decode()
    assert 'id="console-screen"' in page and "vendor/novnc/core/rfb" in page
    assert "The console needs JavaScript" in page
    ip = vm.private_ip.address
    assert f"ssh {vm.login_user or 'stu'}@{ip}" in page
    assert client.get(reverse("console:vnc_token", args=[vm.pk])).status_code == 405
    answer = client.post(reverse("console:vnc_token", args=[vm.pk]))
    assert answer.status_code == 200 and answer["Cache-Control"] == "no-store"
    url = answer.json()["url"]
    assert url.startswith("ws://testserver:6080/vnc?token=")
    token = url.split("token=", 1)[1]
    assert ConsoleToken.objects.get().token_hash == hashlib.sha256(token.encode()).hexdigest()
    serial = client.get(reverse("console:serial", args=[vm.pk])).content.decode()
    assert "vendor/xterm/lib/xterm" in serial


def test_the_public_url_setting_is_used_as_given(site, vm, settings):
    settings.PORTAL_CONSOLE_URL = "wss://portal.example.org/console/"
    answer = site.client(site.student).post(reverse("console:serial_token", args=[vm.pk]))
    assert answer.json()["url"].startswith("wss://portal.example.org/console/serial?token=")


def test_the_token_needs_csrf(site, vm):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(site.student)
    assert client.post(reverse("console:vnc_token", args=[vm.pk])).status_code == 403
    assert not ConsoleToken.objects.exists()


@pytest.mark.parametrize("who", ["faculty", "other_student", "other_orgadmin"])
def test_people_who_may_not_operate_the_vm_get_404_and_no_token(site, vm, who):
    client = site.client(getattr(site, who))
    for name in ("console:vnc", "console:serial"):
        assert client.get(reverse(name, args=[vm.pk])).status_code == 404
    for name in ("console:vnc_token", "console:serial_token"):
        assert client.post(reverse(name, args=[vm.pk])).status_code == 404
    assert not ConsoleToken.objects.exists()


def test_a_viewer_sees_no_console_button(site, vm):
    detail = site.client(site.faculty).get(reverse("vms:vm_detail", args=[vm.pk]))
    assert detail.status_code == 200
    assert reverse("console:vnc", args=[vm.pk]) not in detail.content.decode()


def test_the_page_of_a_stopped_vm_says_so_and_asks_for_no_token(site, vm):
    VirtualMachine.objects.filter(pk=vm.pk).update(state=VMState.SHUTOFF)
    client = site.client(site.student)
    page = client.get(reverse("console:vnc", args=[vm.pk])).content.decode()
    assert "is shut off; its console opens while it runs" in page
    assert 'id="console-screen"' not in page
    answer = client.post(reverse("console:vnc_token", args=[vm.pk]))
    assert answer.status_code == 409 and "shut off" in answer.json()["error"]


# --- VNC listens on the management address only ------------------------------------------------

def spec(**kw) -> DomainSpec:
    return DomainSpec(name="vm1", uuid="6f1c3f2e-7d4b-4d65-9f0a-5a8f1d2c3b4a", domain_type="kvm",
                      vcpus=1, memory_mib=512, disk_path="/srv/vm1.qcow2", **kw)


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "0:0:0:0:0:0:0:0"])
def test_domain_xml_never_has_vnc_on_every_interface(address):
    with pytest.raises(ValueError, match="every interface"):
        build_domain_xml(spec(vnc_listen=address))


def test_domain_xml_listens_where_it_is_told(site, vm):
    import xml.etree.ElementTree as ET

    from hosts.virt import Hypervisor

    for xml in (build_domain_xml(spec()),
                Hypervisor(site.host.uri).domain_xml(vm.domain_name, secure=True)):
        graphics = ET.fromstring(xml).find("devices/graphics")
        assert graphics.get("listen") == "127.0.0.1"
        assert {e.get("address") for e in graphics.iter("listen")} - {None} == {"127.0.0.1"}


def test_vnc_listens_on_the_hosts_management_address():
    assert vnc_listen_address("qemu:///system", "10.0.0.5") == "127.0.0.1"
    assert vnc_listen_address("qemu+ssh://root@hv2/system", "") == "127.0.0.1"
    assert vnc_listen_address("qemu+ssh://root@hv2/system", "10.0.0.5") == "10.0.0.5"
    assert vnc_listen_address("qemu+tcp://hv2/system", "localhost") in ("127.0.0.1", "::1")
    for address in ("0.0.0.0", "::"):
        with pytest.raises(VirtError, match="every interface"):
            vnc_listen_address("qemu+ssh://root@hv2/system", address)
    with pytest.raises(VirtError, match="cannot resolve"):
        vnc_listen_address("qemu+ssh://root@hv2/system", "no-such-host.invalid")


# --- checks ------------------------------------------------------------------------------------

def test_check_deploy_warns_of_a_plain_console_behind_an_https_site(settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.PORTAL_CONSOLE_URL = "ws://portal.example.org:6080"
    assert [w.id for w in checks.console_tls()] == ["console.W001"]
    assert isinstance(checks.console_tls()[0], Warning)
    settings.PORTAL_CONSOLE_URL = "wss://portal.example.org/console"
    assert checks.console_tls() == []
    settings.SECURE_SSL_REDIRECT = settings.SESSION_COOKIE_SECURE = False
    settings.PORTAL_CONSOLE_URL = "ws://127.0.0.1:6080"
    assert checks.console_tls() == []


def test_checks_refuse_settings_that_cannot_work(settings):
    assert checks.console_settings() == []
    settings.PORTAL_CONSOLE_TOKEN_SECONDS = 120
    settings.PORTAL_CONSOLE_LISTEN = "6080"
    settings.PORTAL_CONSOLE_URL = "http://x"
    settings.PORTAL_CONSOLE_PER_USER = 0
    found = checks.console_settings()
    assert all(isinstance(e, Error) for e in found)
    assert sorted(e.id for e in found) == ["console.E001", "console.E002", "console.E003",
                                           "console.E004"]
