"""Hypervisor tier: moves between two real hosts whose datastore is not shared, and peer to peer.

The not-shared datastore lives under /var/lib/libvirt, which the second host
(tests/integration/second_host.py) has privately in its own mount namespace: the same path
names two different folders, so a disk there must be copied to follow its domain. The second
host's folder is seen from here under its root (`<root>/lib/...`).
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hosts.virt import Hypervisor
from tests.integration.qemu import URI
from tests.integration.second_host import SecondHost, second_host  # noqa: F401
from tests.integration.test_migration_qemu import (  # noqa: F401
    Console,
    _define,
    _login,
    hosts,
    name,
)

pytestmark = pytest.mark.hypervisor

PATTERN, SECTOR = "0x5a", 120000  # a sector of the demo guest's 64 MiB disk it never writes


def _qemu_io(image: Path, command: str) -> None:
    """Run one qemu-io command on a qcow2 image; a pattern that does not match fails."""
    done = subprocess.run(["qemu-io", "-f", "qcow2", "-c", command, str(image)],
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0 and "Pattern verification failed" not in done.stdout, (
        done.stdout, done.stderr)


@pytest.fixture
def private_pool(hosts, guest_image) -> Iterator[tuple[str, Path, Path]]:  # noqa: F811
    """A pool at the same path on both hosts, two folders in fact, the base image in ours."""
    here, there, second = hosts
    tag = uuid.uuid4().hex[:6]
    pool, path = f"ptcopy-{tag}", Path(f"/var/lib/libvirt/portaltest-{tag}")
    for hv in (here, there):
        hv.ensure_pool(pool, str(path))
    path.chmod(0o755)
    base = path / "base.qcow2"
    shutil.copyfile(guest_image, base)
    base.chmod(0o644)
    yield pool, path, second.root / "lib" / path.relative_to("/var/lib/libvirt")
    for hv in (here, there):
        subprocess.run(["virsh", "-c", hv.uri, "pool-destroy", pool], capture_output=True,
                       check=False)
        subprocess.run(["virsh", "-c", hv.uri, "pool-undefine", pool], capture_output=True,
                       check=False)
    shutil.rmtree(path, ignore_errors=True)


def test_a_running_guest_on_a_datastore_not_shared_moves_with_its_disk(
        hosts, name, private_pool):  # noqa: F811
    here, there, second = hosts
    pool, path, there_path = private_pool
    _define(here, name, path, path / "base.qcow2")
    # The guest's files live in RAM and its user may not write its disk: the overlay gets
    # its own data (a pattern in a sector the guest never uses) before it starts.
    _qemu_io(path / f"{name}.qcow2", f"write -P {PATTERN} {SECTOR * 512} 512")
    here.start(name)
    console = Console(URI, name)
    _login(console)
    before = console.uptime()
    console.close()
    moved = here.migrate_live(name, second.uri, shared=False, vnc_port=5994,
                              vnc_listen="127.0.0.1")
    assert moved.facts.state == "running", moved
    assert not moved.snapshot_problem
    assert here.find_domain(name) is None
    console = Console(second.uri, name)
    assert console.uptime() > before  # the same shell: the guest never restarted
    console.close()
    # The disk and its seed are there and gone from here; the base was copied, and stays.
    for volume in (f"{name}.qcow2", f"{name}-seed.iso"):
        assert (there_path / volume).exists()
        assert not (path / volume).exists()
    assert (there_path / "base.qcow2").exists() and (path / "base.qcow2").exists()
    assert there.inspect_image(pool, f"{name}.qcow2").backing_path == str(path / "base.qcow2")
    # The overlay's own data is in the disk there (its base reads alike on both hosts).
    there.destroy(name)
    _qemu_io(there_path / f"{name}.qcow2", f"read -P {PATTERN} {SECTOR * 512} 512")


def test_a_stopped_vm_on_a_datastore_not_shared_moves_by_copy(hosts, name, private_pool):  # noqa: F811
    here, there, second = hosts
    pool, path, there_path = private_pool
    _define(here, name, path, path / "base.qcow2", seed=False)
    here.snapshot_create(name, "snap-copied")
    moved = here.migrate_cold(name, second.uri, shared=False, vnc_port=5995,
                              vnc_listen="127.0.0.1")
    assert moved.state == "shutoff"
    assert here.find_domain(name) is None
    assert (there_path / f"{name}.qcow2").exists() and not (path / f"{name}.qcow2").exists()
    assert there.snapshot_names(name) == ["snap-copied"]  # inside the copied image
    assert there.start(name).state == "running"


def test_a_failed_move_leaves_nothing_of_the_disk_on_the_destination(
        hosts, name, private_pool):  # noqa: F811
    here, there, second = hosts
    pool, path, there_path = private_pool
    _define(here, name, path, path / "base.qcow2", network="default", seed=False)
    here.start(name)
    with pytest.raises(Exception, match="cannot migrate domain"):
        here.migrate_live(name, second.uri, shared=False, vnc_port=5996,
                          vnc_listen="127.0.0.1")
    assert here.domain(name).state == "running"
    assert (path / f"{name}.qcow2").exists()
    assert not (there_path / f"{name}.qcow2").exists()
    assert not (there_path / "base.qcow2").exists()


def test_a_running_guest_moves_peer_to_peer(hosts, name, tmp_path_factory, guest_image):  # noqa: F811
    here, there, second = hosts
    shared = Path(subprocess.run(["mktemp", "-d", "/var/tmp/portaltest-XXXXXX"],
                                 capture_output=True, text=True, check=True).stdout.strip())
    shared.chmod(0o755)
    try:
        _define(here, name, shared, guest_image, seed=False)
        here.start(name)
        # The source's libvirtd reaches the destination's itself (qemu+tcp on the veth).
        moved = here.migrate_live(name, second.uri, shared=True, vnc_port=5997,
                                  vnc_listen="127.0.0.1", peer_to_peer=True)
        assert moved.facts.state == "running"
        assert here.find_domain(name) is None
        assert Hypervisor(second.uri).domain(name).state == "running"
    finally:
        there.undefine_domain(name)
        shutil.rmtree(shared, ignore_errors=True)
