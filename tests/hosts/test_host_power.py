"""Powering hosts: IPMI argv (the password never in it), Wake-on-LAN bytes, SSH poweroff,
refusals in words, failures with the raw text for admins."""

from __future__ import annotations

import socket
import subprocess

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from core.errors import PortalError
from hosts import power
from hosts.models import Host, HostStatus, PowerMethod
from hosts.power import (
    PowerFailed,
    host_power_request,
    ipmi_command,
    ipmi_run,
    ssh_poweroff,
    ssh_poweroff_argv,
    wol_packet,
    wol_send,
)
from hosts.remote import RemoteError, Result
from operations.models import Operation, OperationKind, OperationStatus
from operations.tasks import run_operation
from vms.models import VirtualMachine, VMState

pytestmark = pytest.mark.django_db
SECRET = "s3cret-Pw"


@pytest.fixture
def ipmi_host(site, monkeypatch):
    monkeypatch.setenv("HV1_BMC_PW", SECRET)
    Host.objects.filter(pk=site.host.pk).update(
        power_method=PowerMethod.IPMI, bmc_address="bmc-hv1.example.org", bmc_username="admin",
        bmc_password_env="HV1_BMC_PW", status=HostStatus.MAINTENANCE)
    site.host.refresh_from_db()
    return site.host


@pytest.fixture
def ran(monkeypatch):
    """Record every subprocess.run of the power module and answer like ipmitool."""
    calls = []

    def fake_run(argv, **kw):
        calls.append((argv, kw))
        return subprocess.CompletedProcess(argv, 0, "Chassis Power Control: Up/On\n", "")

    monkeypatch.setattr(power.subprocess, "run", fake_run)
    return calls


def test_ipmi_argv_takes_the_password_from_the_environment_never_argv(ipmi_host):
    argv, env = ipmi_command(ipmi_host, "on")
    assert argv == ["ipmitool", "-I", "lanplus", "-H", "bmc-hv1.example.org", "-U", "admin",
                    "-E", "chassis", "power", "on"]
    assert env["IPMI_PASSWORD"] == SECRET
    assert all(SECRET not in a for a in argv)


def test_ipmi_argv_with_a_password_file(ipmi_host):
    ipmi_host.bmc_password_env, ipmi_host.bmc_password_file = "", "/etc/portal/bmc-hv1"
    argv, env = ipmi_command(ipmi_host, "status")
    assert argv[-5:] == ["-f", "/etc/portal/bmc-hv1", "chassis", "power", "status"]
    assert "-E" not in argv and "IPMI_PASSWORD" not in env


def test_ipmi_without_the_variable_set_is_refused_in_words(ipmi_host, monkeypatch):
    monkeypatch.delenv("HV1_BMC_PW")
    with pytest.raises(PortalError, match="no environment variable HV1_BMC_PW"):
        ipmi_command(ipmi_host, "on")


def test_ipmi_run_hands_the_password_in_the_environment(ipmi_host, ran):
    assert ipmi_run(ipmi_host, "off") == "Chassis Power Control: Up/On"
    argv, kw = ran[0]
    assert argv[-3:] == ["chassis", "power", "off"] and SECRET not in " ".join(argv)
    assert kw["env"]["IPMI_PASSWORD"] == SECRET and kw["timeout"] == power.IPMI_TIMEOUT_S


def test_ipmitool_missing_says_to_install_it(ipmi_host, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # a real lookup that finds nothing
    with pytest.raises(PortalError, match="ipmitool is not installed"):
        ipmi_run(ipmi_host, "on")


def test_ipmitool_failing_gives_its_output_for_admins(ipmi_host, monkeypatch):
    monkeypatch.setattr(power.subprocess, "run", lambda argv, **kw: subprocess.CompletedProcess(
        argv, 1, "", "Error: Unable to establish IPMI v2 / RMCP+ session\n"))
    with pytest.raises(PowerFailed, match="exited with status 1: Error: Unable to establish"):
        ipmi_run(ipmi_host, "on")


def test_ipmitool_hanging_is_given_up(ipmi_host, monkeypatch):
    def hang(argv, **kw):
        raise subprocess.TimeoutExpired(argv, kw["timeout"])

    monkeypatch.setattr(power.subprocess, "run", hang)
    with pytest.raises(PowerFailed, match="gave no answer within 30 s"):
        ipmi_run(ipmi_host, "status")


def test_the_magic_packet():
    packet = wol_packet("52:54:00:AB:cd:0f")
    assert len(packet) == 102
    assert packet[:6] == b"\xff" * 6
    assert packet[6:] == bytes([0x52, 0x54, 0x00, 0xAB, 0xCD, 0x0F]) * 16
    assert wol_packet("52-54-00-ab-cd-0f") == packet
    with pytest.raises(ValueError, match="not a MAC"):
        wol_packet("52:54:00")


def test_wake_on_lan_sends_the_packet(site, monkeypatch):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(5)
        monkeypatch.setattr(power, "WOL_PORT", listener.getsockname()[1])
        host = Host(name="w", mac_address="52:54:00:ab:cd:0f", wol_broadcast="127.0.0.1")
        assert "sent to 127.0.0.1" in wol_send(host)
        assert listener.recv(200) == wol_packet("52:54:00:ab:cd:0f")


def test_ssh_poweroff_argv():
    assert ssh_poweroff_argv(Host(power_ssh_user="root")) == ["poweroff"]
    assert ssh_poweroff_argv(Host(power_ssh_user="ops")) == ["sudo", "-n", "poweroff"]


@pytest.fixture
def ssh_host(site):
    Host.objects.filter(pk=site.host.pk).update(
        power_method=PowerMethod.SSH, address="10.0.0.5", status=HostStatus.MAINTENANCE)
    site.host.refresh_from_db()
    return site.host


def test_ssh_poweroff_runs_through_the_ssh_runner(ssh_host, monkeypatch):
    seen = []
    monkeypatch.setattr(power, "run", lambda remote, argv, **kw: seen.append(
        (remote, argv)) or Result("", "", 0))
    assert ssh_poweroff(ssh_host) == "poweroff started"
    remote, argv = seen[0]
    assert argv == ["poweroff"] and remote.address == "10.0.0.5" and remote.username == "root"


def test_ssh_poweroff_failing_or_cut_short(ssh_host, monkeypatch):
    monkeypatch.setattr(power, "run", lambda remote, argv, **kw: Result(
        "", "poweroff: must be superuser.", 1))
    with pytest.raises(PowerFailed, match="status 1: poweroff: must be superuser"):
        ssh_poweroff(ssh_host)

    def cut(remote, argv, **kw):
        raise RemoteError("x: `poweroff`: the connection closed before the command finished")

    monkeypatch.setattr(power, "run", cut)
    assert "closed the connection" in ssh_poweroff(ssh_host)


def test_the_power_configuration_is_checked(site):
    host = site.host
    host.power_method = PowerMethod.IPMI
    with pytest.raises(ValidationError) as caught:
        host.full_clean()
    assert {"bmc_address", "bmc_username", "bmc_password_env"} <= set(caught.value.error_dict)
    host.power_method, host.mac_address = PowerMethod.WOL, "52:54:00:ab:cd:0f"
    host.full_clean()
    host.ssh_power_off = True
    with pytest.raises(ValidationError, match="SSH address"):
        host.full_clean()


def test_power_off_is_refused_while_up_or_with_vms_running(ipmi_host, site):
    Host.objects.filter(pk=ipmi_host.pk).update(status=HostStatus.UP)
    ipmi_host.refresh_from_db()
    with pytest.raises(PortalError, match="put it into maintenance first"):
        host_power_request(host=ipmi_host, on=False, actor=site.admin)
    Host.objects.filter(pk=ipmi_host.pk).update(status=HostStatus.MAINTENANCE)
    ipmi_host.refresh_from_db()
    for name, state in (("web", VMState.RUNNING), ("off", VMState.SHUTOFF),
                        ("gone", VMState.DELETED)):
        VirtualMachine.objects.create(
            name=name, owner=site.student, organisation=site.org, template=site.template,
            host=ipmi_host, vcpus=1, memory_mib=512, disk_gib=2, state=state)
    with pytest.raises(PortalError, match=r"still runs 1 VM\(s\) \(web\)"):
        host_power_request(host=ipmi_host, on=False, actor=site.admin)


def test_wake_on_lan_alone_cannot_power_off_and_ssh_cannot_power_on(site):
    Host.objects.filter(pk=site.host.pk).update(
        power_method=PowerMethod.WOL, mac_address="52:54:00:ab:cd:0f",
        status=HostStatus.MAINTENANCE)
    site.host.refresh_from_db()
    with pytest.raises(PortalError, match="Wake-on-LAN cannot power hv1 off"):
        host_power_request(host=site.host, on=False, actor=site.admin)
    site.host.power_method = PowerMethod.SSH
    with pytest.raises(PortalError, match="SSH cannot power hv1 on"):
        host_power_request(host=site.host, on=True, actor=site.admin)
    site.host.power_method = PowerMethod.NONE
    with pytest.raises(PortalError, match="No power method is set for hv1"):
        host_power_request(host=site.host, on=True, actor=site.admin)


def test_power_on_from_the_page_runs_as_an_operation(ipmi_host, site, ran,
                                                     django_capture_on_commit_callbacks):
    client = site.client(site.admin)
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(reverse("hosts:host_power_on", args=[ipmi_host.pk]),
                               follow=True)
    assert "Power on of hv1 queued" in response.content.decode()
    op = Operation.objects.get(host=ipmi_host, kind=OperationKind.HOST_POWER_ON)
    run_operation(op.pk)
    op.refresh_from_db()
    assert op.status == OperationStatus.SUCCEEDED
    assert op.message == ("hv1: power on asked through IPMI "
                          "(Chassis Power Control: Up/On).")
    assert ran[0][0][-1] == "on"


def test_a_failed_power_off_keeps_the_raw_text_for_admins(ipmi_host, site, monkeypatch,
                                                          django_capture_on_commit_callbacks):
    monkeypatch.setattr(power.subprocess, "run", lambda argv, **kw: subprocess.CompletedProcess(
        argv, 1, "", "Error: Unable to establish IPMI v2 / RMCP+ session\n"))
    with django_capture_on_commit_callbacks(execute=False):
        op = host_power_request(host=ipmi_host, on=False, actor=site.admin)
    run_operation(op.pk)
    op.refresh_from_db()
    assert op.status == OperationStatus.FAILED
    assert op.message.startswith("Power off of host hv1 failed; the details below say why.")
    assert "Unable to establish IPMI" in op.detail and "Unable" not in op.message


def test_the_page_refuses_power_off_in_words(site):
    Host.objects.filter(pk=site.host.pk).update(power_method=PowerMethod.SSH,
                                                address="10.0.0.5")
    response = site.client(site.admin).post(
        reverse("hosts:host_power_off", args=[site.host.pk]), {"confirmed": "1"}, follow=True)
    assert "put it into maintenance first" in response.content.decode()
    assert not Operation.objects.filter(kind=OperationKind.HOST_POWER_OFF).exists()


def test_power_off_from_the_page_asks_first(ipmi_host, site, ran,
                                            django_capture_on_commit_callbacks):
    client = site.client(site.admin)
    url = reverse("hosts:host_power_off", args=[ipmi_host.pk])
    page = client.get(reverse("hosts:host_detail", args=[ipmi_host.pk])).content.decode()
    assert 'data-confirm="Power off hv1?' in page
    question = client.post(url)
    assert question.status_code == 200
    assert "Power off hv1?" in question.content.decode()
    assert not Operation.objects.filter(kind=OperationKind.HOST_POWER_OFF).exists()
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(url, {"confirmed": "1"}, follow=True)
    assert "Power off of hv1 queued" in response.content.decode()
    op = Operation.objects.get(kind=OperationKind.HOST_POWER_OFF)
    run_operation(op.pk)
    op.refresh_from_db()
    assert op.status == OperationStatus.SUCCEEDED and ran[0][0][-1] == "off"


@pytest.mark.parametrize(("fields", "on", "off"), [
    ({"power_method": PowerMethod.IPMI}, True, True),
    ({"power_method": PowerMethod.SSH}, False, True),
    ({"power_method": PowerMethod.WOL}, True, False),
    ({"power_method": PowerMethod.WOL, "ssh_power_off": True}, True, True),
    ({"power_method": PowerMethod.NONE}, False, False),
])
def test_the_page_offers_only_the_power_buttons_the_method_can_do(site, fields, on, off):
    Host.objects.filter(pk=site.host.pk).update(**fields)
    html = site.client(site.admin).get(
        reverse("hosts:host_detail", args=[site.host.pk])).content.decode()
    assert ('id="host-power-on"' in html) is on
    assert ('id="host-power-off"' in html) is off
