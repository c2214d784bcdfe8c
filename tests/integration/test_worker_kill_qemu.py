"""A worker killed with SIGKILL between disk creation and define, on a real libvirtd.

The worker is a separate process on a SQLite file shared with the reconciler's process: it
records its steps as it takes them, beats its heartbeat, and waits inside the define step
(patched in that process only) until the test kills it. The reconciler, in a fresh process,
then finds the stopped heartbeat, gives back the volume, the DHCP entry and the address, and
marks the VM as needing attention with Retry and Delete.
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.qemu import make_network

pytestmark = pytest.mark.hypervisor
URI = "qemu:///system"
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("worker_fault.py")


def virsh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture
def place() -> Iterator[dict]:
    """A work folder (datastore), an isolated network and a database file; all removed."""
    workdir = Path(tempfile.mkdtemp(prefix="portaltest-", dir="/var/tmp"))
    workdir.chmod(0o755)  # qemu runs as another user and must reach the images
    network, subnet = make_network(workdir, "10.214", random.randrange(100, 250))
    virsh("net-start", network)
    suffix = uuid.uuid4().hex[:6]
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update({
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"sqlite:///{workdir}/portal.sqlite3",
        "PYTHONPATH": str(ROOT),
        "PORTAL_HEARTBEAT_EVERY": "0.2",
        "PORTAL_HEARTBEAT_STALE_AFTER": "2",
    })
    place = {"workdir": workdir, "network": network, "subnet": subnet, "suffix": suffix,
             "env": env, "procs": []}
    try:
        yield place
    finally:
        for proc in place["procs"]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        name = f"pf-{suffix}"
        virsh("destroy", name)
        virsh("undefine", name, "--nvram")
        pool = f"portal-f{suffix}"
        virsh("pool-destroy", pool)
        virsh("pool-undefine", pool)
        virsh("net-destroy", network)
        virsh("net-undefine", network)
        shutil.rmtree(workdir, ignore_errors=True)


def run(place: dict, *argv: str) -> dict:
    done = subprocess.run([sys.executable, str(SCRIPT), *argv], cwd=ROOT, env=place["env"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def wait_for_line(proc: subprocess.Popen, want: str, limit_s: float = 180) -> str:
    """Read the worker's output until a line says `want`; fail if it ends first."""
    deadline = time.monotonic() + limit_s
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if line.strip() == want:
                return line
        elif proc.poll() is not None:
            break
    pytest.fail(f"the worker never said {want!r}: {''.join(seen)[-3000:]}"
                f"{proc.stderr.read()[-3000:] if proc.poll() is not None else ''}")


def test_a_worker_killed_between_disk_and_define_is_undone_by_the_reconciler(place):
    made = run(place, "setup", str(place["workdir"]), place["network"], place["subnet"],
               place["suffix"])
    worker = subprocess.Popen(
        [sys.executable, str(SCRIPT), "install", str(made["op"])], cwd=ROOT, env=place["env"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    place["procs"].append(worker)
    wait_for_line(worker, "BEATING")

    # Between disk creation and define: the volume and the DHCP entry exist, no domain yet.
    volume = Path(place["workdir"]) / made["volume"]
    assert volume.exists()
    assert made["name"] in virsh("net-dumpxml", place["network"]).stdout
    assert virsh("dominfo", made["name"]).returncode != 0

    os.killpg(worker.pid, signal.SIGKILL)
    assert worker.wait(30) == -signal.SIGKILL

    out = run(place, "reconcile", str(made["op"]), str(made["vm"]))
    assert out["status_before"] == "running"
    # "domain" is recorded just before define, which the kill interrupted.
    assert out["steps_before"] == ["host", "ip", "vnc_port", "volume", "dhcp", "domain"]
    assert out["reconcile"]["failed"] == 1
    assert out["status"] == "failed" and "stopped answering" in out["message"]
    assert out["steps"] == [], out
    assert out["vm_state"] == "failed" and out["vm_host"] is None and out["ips_held"] == 0
    assert "Everything it had taken was given back" in out["attention"]
    assert out["admin_retry"] and out["admin_delete"]
    assert out["owner_sees_attention"] and out["owner_delete"]

    assert not volume.exists()
    assert made["volume"] not in virsh("vol-list", made["pool"]).stdout
    assert made["name"] not in virsh("net-dumpxml", place["network"]).stdout
    assert virsh("dominfo", made["name"]).returncode != 0
