"""Netns-tier test of powering a host off through SSH: the real SSH path to a namespace host.

A namespace `portalpwr-<random>` stands in for a KVM host, with its own sshd on port 22 of
its address on a veth link from the root namespace. Its sessions find `poweroff` first in a
directory of the test (sshd's `SetEnv PATH`): a script that records its call in a file. As
a guard, sshd runs in a private mount namespace where /usr/bin/systemctl (what the system's
poweroff links to) is that script too, so nothing can reach the machine's own power.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hosts import remote
from hosts.models import Host, HostStatus, PowerMethod
from hosts.power import host_power_request
from operations.models import OperationStatus
from operations.tasks import run_operation
from tests.integration.test_nat_iptables import (
    _keygen,
    _kill_namespace_processes,
    _wait_for_port,
    sh,
)

pytestmark = pytest.mark.netns


@dataclass(frozen=True)
class PowerLab:
    """The namespace host: its address, sshd host key, the client key and the call record."""

    address: str
    host_key: str
    client_key: Path
    bindir: Path
    record: Path


RECORDER = """#!/bin/sh
echo "$0 $*" >> {record}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PowerLab]:
    tag = secrets.token_hex(3)
    ns, root_if, ns_if = f"portalpwr-{tag}", f"ppw{tag}r", f"ppw{tag}n"
    used = sh("ip", "-o", "-4", "addr", "show").stdout
    octet = next(o for o in (secrets.randbelow(250) + 1 for _ in range(50))
                 if f" 10.216.{o}." not in used)
    root_side, ns_side = f"10.216.{octet}.1", f"10.216.{octet}.2"
    tmp = tmp_path_factory.mktemp("powerlab")
    bindir, record = tmp / "bin", tmp / "calls"
    bindir.mkdir()
    script = bindir / "poweroff"
    script.write_text(RECORDER.format(record=record))
    script.chmod(0o755)
    sshd: subprocess.Popen[bytes] | None = None
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", root_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{root_side}/30", "dev", root_if)
        sh("ip", "link", "set", root_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ns_side}/30", "dev", ns_if)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        client_pub = _keygen(tmp / "client_ed25519")
        authorized = tmp / "authorized_keys"
        authorized.write_text(client_pub + "\n")
        authorized.chmod(0o600)
        host_key = _keygen(tmp / "ssh_host_ed25519_key")
        config = tmp / "sshd_config"
        config.write_text("\n".join([
            "Port 22", f"ListenAddress {ns_side}", f"HostKey {tmp / 'ssh_host_ed25519_key'}",
            f"AuthorizedKeysFile {authorized}", "PermitRootLogin prohibit-password",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
            f"PidFile {tmp / 'sshd.pid'}", "StrictModes no", "LogLevel VERBOSE",
            f"SetEnv PATH={bindir}:/usr/bin:/bin", "",
        ]))
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        log = tmp / "sshd.log"
        guard = f"mount --bind {script} /usr/bin/systemctl && exec /usr/sbin/sshd -D " \
                f"-f {config} -E {log}"
        sshd = subprocess.Popen(
            ["ip", "netns", "exec", ns, "unshare", "-m", "--propagation", "private",
             "sh", "-c", guard],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_port(ns_side, 22, sshd, log)
        yield PowerLab(address=ns_side, host_key=host_key, client_key=tmp / "client_ed25519",
                       bindir=bindir, record=record)
    finally:
        remote.close_all()
        if sshd is not None:
            sshd.terminate()
            try:
                sshd.wait(5)
            except subprocess.TimeoutExpired:
                sshd.kill()
                sshd.wait(5)
        _kill_namespace_processes(ns)
        sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", root_if, check=False)


@pytest.mark.django_db
def test_power_off_through_ssh_runs_poweroff_on_the_host(
        lab: PowerLab, site, settings, django_capture_on_commit_callbacks) -> None:
    settings.PORTAL_MONITOR = {**settings.PORTAL_MONITOR, "SSH_KEY_FILE": str(lab.client_key)}
    Host.objects.filter(pk=site.host.pk).update(
        address=lab.address, ssh_host_key=lab.host_key, power_method=PowerMethod.SSH,
        status=HostStatus.MAINTENANCE)
    site.host.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=False):
        op = host_power_request(host=site.host, on=False, actor=site.admin)
    try:
        run_operation(op.pk)
    finally:
        remote.close_all()
    op.refresh_from_db()
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.detail)
    assert op.message == "hv1: power off asked through SSH (poweroff started)."
    # Found through the session's PATH, called with no argument, once.
    assert lab.record.read_text() == f"{lab.bindir}/poweroff \n"
    # The machine's own systemctl is untouched outside the guard's mount namespace.
    assert Path("/usr/bin/systemctl").read_bytes()[:4] == b"\x7fELF"
