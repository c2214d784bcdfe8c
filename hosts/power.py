"""Powering hosts on and off: IPMI (ipmitool), Wake-on-LAN, or `poweroff` over SSH.

Power actions are host-scoped operations (permission hosts.manage_host). The BMC password
never appears in an argument list: ipmitool reads it from IPMI_PASSWORD (`-E`, the value
taken from the variable the host names) or from a file (`-f`). A host is powered off only
in maintenance or down, and only with no VM running on it (the VMs application says which
run: `host_running_vms_source_set`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable

from django.conf import settings

from core.errors import HostFailure, PortalError
from operations.models import Operation, OperationKind
from operations.registry import handles
from operations.requests import operation_request

from .models import Host, HostStatus, PowerMethod
from .remote import RemoteError, RemoteHost, run

IPMITOOL = "ipmitool"
IPMI_TIMEOUT_S = 30
SSH_POWEROFF_TIMEOUT_S = 30
WOL_PORT = 9
OUTPUT_TAIL = 2000
# The host states from which it may be powered off: nothing is placed there any more.
POWER_OFF_STATES = (HostStatus.MAINTENANCE, HostStatus.DOWN)


class PowerFailed(HostFailure):
    """The power tool or the host failed; its own text is for administrators."""


# The names of the VMs running (not shut off, not deleted) on a host. The VMs application,
# which sits above hosts, registers it; without it, power off is refused.
_running_vms_source: Callable[[Host], list[str]] | None = None


def host_running_vms_source_set(source: Callable[[Host], list[str]]) -> None:
    """Ask this function which VMs run on a host before powering it off."""
    global _running_vms_source  # noqa: PLW0603 - set once, from VmsConfig.ready()
    _running_vms_source = source


def host_running_vms(host: Host) -> list[str]:
    """Return the names of the VMs running on the host; refuse when nobody can tell."""
    if _running_vms_source is None:
        raise PortalError("The portal cannot tell which VMs run on the host; nothing was done.")
    return _running_vms_source(host)


# ---- IPMI ----

def ipmi_command(host: Host, action: str) -> tuple[list[str], dict[str, str]]:
    """Return ipmitool's argv and the environment it needs; the password is never in argv."""
    if action not in ("on", "off", "status"):
        raise ValueError(f"unknown power action {action!r}")
    argv = [IPMITOOL, "-I", "lanplus", "-H", host.bmc_address, "-U", host.bmc_username]
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    if host.bmc_password_file:
        argv += ["-f", host.bmc_password_file]
    else:
        password = os.environ.get(host.bmc_password_env) if host.bmc_password_env else None
        if not password:
            raise PortalError(
                f"The BMC password of {host.name} is not available: the workers have no "
                f"environment variable {host.bmc_password_env or '(none named)'}. Set it "
                "for the workers or name a password file in administration.")
        argv.append("-E")
        env["IPMI_PASSWORD"] = password
    return [*argv, "chassis", "power", action], env


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= OUTPUT_TAIL else "…" + text[-OUTPUT_TAIL:]


def ipmi_run(host: Host, action: str) -> str:
    """Run `ipmitool … chassis power <action>`; return its output or raise."""
    argv, env = ipmi_command(host, action)
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True,  # noqa: S603
                              timeout=IPMI_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise PortalError("ipmitool is not installed where the portal's workers run; "
                          "install the ipmitool package there and try again.") from None
    except subprocess.TimeoutExpired as exc:
        raise PowerFailed(f"`{' '.join(argv)}` gave no answer within {IPMI_TIMEOUT_S} s "
                          f"(BMC {host.bmc_address})") from exc
    output = _tail(f"{done.stdout}\n{done.stderr}")
    if done.returncode != 0:
        raise PowerFailed(f"`{' '.join(argv)}` exited with status {done.returncode}: "
                          f"{output or '(no output)'}")
    return output


# ---- Wake-on-LAN ----

def wol_packet(mac: str) -> bytes:
    """Return the magic packet waking the card with this MAC: 6 x 0xff, then 16 x the MAC."""
    digits = mac.replace(":", "").replace("-", "")
    raw = bytes.fromhex(digits)
    if len(raw) != 6:
        raise ValueError(f"{mac!r} is not a MAC address")
    return b"\xff" * 6 + raw * 16


def wol_send(host: Host) -> str:
    """Broadcast the magic packet of the host's MAC on UDP port 9; return what was done."""
    packet = wol_packet(host.mac_address)
    target = host.wol_broadcast or "255.255.255.255"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.sendto(packet, (target, WOL_PORT))
    except OSError as exc:
        raise PowerFailed(f"cannot send the Wake-on-LAN packet to {target}: {exc}") from exc
    return f"magic packet for {host.mac_address} sent to {target}:{WOL_PORT}"


# ---- SSH ----

def ssh_poweroff_argv(host: Host) -> list[str]:
    """Return the command that powers the host off: poweroff as root, else through sudo."""
    return ["poweroff"] if (host.power_ssh_user or "root") == "root" \
        else ["sudo", "-n", "poweroff"]


def ssh_poweroff(host: Host) -> str:
    """Run poweroff on the host through the SSH runner; a connection cut by it is success."""
    try:
        remote = RemoteHost(address=host.address, username=host.power_ssh_user or "root",
                            host_key=host.ssh_host_key,
                            key_filename=settings.PORTAL_MONITOR["SSH_KEY_FILE"] or None,
                            command_timeout=SSH_POWEROFF_TIMEOUT_S)
        result = run(remote, ssh_poweroff_argv(host), check=False)
    except ValueError as exc:
        raise PortalError(f"The SSH settings of {host.name} are not usable: {exc}") from exc
    except RemoteError as exc:
        if exc.exit_status is None and "closed before the command finished" in exc.message:
            return "poweroff started; the host closed the connection"
        raise PowerFailed(str(exc)) from exc
    output = _tail(f"{result.stdout}\n{result.stderr}")
    if result.exit_status != 0:
        raise PowerFailed(f"{remote.label}: `{' '.join(ssh_poweroff_argv(host))}` exited with "
                          f"status {result.exit_status}: {output or '(no output)'}")
    return output or "poweroff started"


# ---- requests and operations ----

def _power_off_refusal(host: Host) -> str | None:
    if host.status not in POWER_OFF_STATES:
        return (f"{host.name} is up and may take new VMs: put it into maintenance first, "
                "then power it off.")
    running = host_running_vms(host)
    if running:
        return (f"{host.name} still runs {len(running)} VM(s) ({', '.join(running[:10])}): "
                "shut them down or migrate them first; nothing was done.")
    if host.power_method in (PowerMethod.NONE, ""):
        return f"No power method is set for {host.name}; set one in administration."
    if host.power_method == PowerMethod.WOL and not host.ssh_power_off:
        return (f"Wake-on-LAN cannot power {host.name} off: enable “power off through SSH” "
                "or use IPMI in administration.")
    return None


def _power_on_refusal(host: Host) -> str | None:
    if host.power_method in (PowerMethod.NONE, ""):
        return f"No power method is set for {host.name}; set one in administration."
    if host.power_method == PowerMethod.SSH:
        return (f"SSH cannot power {host.name} on; set IPMI or Wake-on-LAN in "
                "administration.")
    return None


def host_power_request(*, host: Host, on: bool, actor=None) -> Operation:  # noqa: ANN001
    """Queue powering the host on or off, or raise PortalError saying why it may not be."""
    refusal = _power_on_refusal(host) if on else _power_off_refusal(host)
    if refusal:
        raise PortalError(refusal)
    kind = OperationKind.HOST_POWER_ON if on else OperationKind.HOST_POWER_OFF
    return operation_request(kind=kind, actor=actor, host=host)


@handles(OperationKind.HOST_POWER_ON, target="host", scope=("host",),
         permission="hosts.manage_host")
def host_power_on(op: Operation) -> str:
    """Power the host on through its method."""
    host = Host.objects.get(pk=op.host_id)
    refusal = _power_on_refusal(host)
    if refusal:
        raise PortalError(refusal)
    if host.power_method == PowerMethod.IPMI:
        said = ipmi_run(host, "on")
        how = "IPMI"
    else:
        said, how = wol_send(host), "Wake-on-LAN"
    after = (" It stays down until an administrator marks it up."
             if host.status == HostStatus.DOWN else "")
    return f"{host.name}: power on asked through {how} ({said}).{after}"


@handles(OperationKind.HOST_POWER_OFF, target="host", scope=("host",),
         permission="hosts.manage_host")
def host_power_off(op: Operation) -> str:
    """Power the host off through its method, once nothing runs there."""
    host = Host.objects.get(pk=op.host_id)
    refusal = _power_off_refusal(host)
    if refusal:
        raise PortalError(refusal)
    if host.power_method == PowerMethod.IPMI:
        said, how = ipmi_run(host, "off"), "IPMI"
    else:
        said, how = ssh_poweroff(host), "SSH"
    return f"{host.name}: power off asked through {how} ({said})."


# ---- fencing a dead host ----

FENCE_STATUS_TRIES = 5
FENCE_STATUS_WAIT_S = 2.0


class FenceImpossible(PortalError):
    """Nothing the portal can do powers the host off, and nobody said it is off."""


def host_fence_means(host: Host) -> str | None:
    """Return how the portal can power a dead host off ("IPMI", "SSH"), or None."""
    if host.power_method == PowerMethod.IPMI:
        return "IPMI"
    if host.power_method == PowerMethod.SSH or (
            host.power_method == PowerMethod.WOL and host.ssh_power_off):
        return "SSH"
    return None


def _ipmi_fence(host: Host) -> str:
    """Power the host off through its BMC and wait until the BMC reports it off."""
    said = ipmi_run(host, "off")
    status = ""
    for attempt in range(FENCE_STATUS_TRIES):
        status = ipmi_run(host, "status")
        if status.lower().rstrip(".").endswith(" off"):
            return f"{said}; {status}"
        if attempt + 1 < FENCE_STATUS_TRIES:
            time.sleep(FENCE_STATUS_WAIT_S)
    raise PowerFailed(f"the BMC {host.bmc_address} still reports “{status}” after "
                      "`chassis power off`")


def host_fence(host: Host, *, off_confirmed_by: str = "") -> str:
    """Make sure a dead host runs nothing: power it off whatever VMs are recorded there.

    Unlike power off, VMs recorded on the host do not stop it: the host is dead and so are
    they. Through IPMI the BMC must then report the chassis off; through SSH `poweroff` must
    start (a host that cannot be reached is not fenced). With no such method the fence holds
    only when an administrator said the host is off (`off_confirmed_by`, their username).
    Return what was done; raise FenceImpossible, PortalError or PowerFailed when not fenced.
    """
    means = host_fence_means(host)
    if means == "IPMI":
        return f"{host.name} fenced through IPMI ({_ipmi_fence(host)})"
    if means == "SSH":
        return f"{host.name} fenced through SSH ({ssh_poweroff(host)})"
    if off_confirmed_by:
        return (f"{host.name} not powered off by the portal (no IPMI or SSH power method): "
                f"{off_confirmed_by} confirmed it is powered off")
    raise FenceImpossible(
        f"{host.name} cannot be fenced: its power method "
        f"({host.get_power_method_display()}) cannot power it off. Make sure it is powered "
        "off (unplug it if need be), then confirm so when asking again.")
