"""Measure evacuating N running demo guests between two libvirt hosts, 1 vs 2 at a time.

The hosts are bench/migration.py's: this machine's libvirtd and the hypervisor tier's second
host (`tests/integration/second_host.py`), with the guests' disks in a folder both see (a
shared datastore). BENCH_VMS (4) demo guests (192 MiB, TCG) boot here and reach their login
prompt; then, for each parallelism in BENCH_PARALLEL ("1,2"), all of them move there and back
the way an evacuation runs its children: a thread pool of that size, each thread one
`Hypervisor.migrate_live` (`vms.services.evacuation`). Each evacuation is timed from the
first move's start to the last one's end. Prints the times.

    PYTHONPATH=. .venv/bin/python bench/evacuation.py      (run as root: it makes namespaces)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
import django  # noqa: E402

django.setup()

from hosts.guest_image import ensure_guest_image  # noqa: E402
from hosts.virt import Hypervisor, close_all  # noqa: E402
from hosts.virt.domain_xml import DomainSpec, build_domain_xml  # noqa: E402
from tests.integration.guest import GUEST_CACHE  # noqa: E402
from tests.integration.qemu import URI, unique  # noqa: E402
from tests.integration.second_host import (  # noqa: E402
    SUBNET,
    second_host_start,
    second_host_stop,
)
from tests.integration.test_migration_qemu import (  # noqa: E402
    NETWORK,
    PASSWORD,
    USER,
    Console,
    _network_xml,
)
from vms.cloudinit import SeedUser, build_seed_iso, hash_password  # noqa: E402

VMS = int(os.environ.get("BENCH_VMS", "4"))
PARALLEL = [int(p) for p in os.environ.get("BENCH_PARALLEL", "1,2").split(",")]
FIRST_PORT = 5980


def _define(hv: Hypervisor, name: str, index: int, workdir: Path, base: Path) -> None:
    """Define one guest: its overlay disk, its seed, its own MAC and VNC port."""
    disk = workdir / f"{name}.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2",
                    str(disk)], check=True, capture_output=True, timeout=60)
    disk.chmod(0o666)
    mac = f"52:54:00:23:11:{index:02x}"
    seed = workdir / f"{name}-seed.iso"
    seed.write_bytes(build_seed_iso(
        instance_id=f"iid-{name}", hostname="migrant", mac=mac,
        user=SeedUser(name=USER, password_hash=hash_password(PASSWORD), ssh_keys=(),
                      gecos="Migrant")))
    seed.chmod(0o644)
    hv.define_domain(build_domain_xml(DomainSpec(
        name=name, uuid=str(uuid.uuid4()), domain_type="qemu", vcpus=1, memory_mib=192,
        disk_path=str(disk), network=NETWORK, mac=mac, seed_path=str(seed),
        vnc_port=FIRST_PORT + index, vnc_listen="127.0.0.1")))


def _evacuate(source: Hypervisor, dest_uri: str, migrate_uri: str, names: list[str],
              parallel: int) -> float:
    """Move every guest to dest_uri, `parallel` at a time; return the seconds it took."""
    def move(index: int, name: str) -> None:
        source.migrate_live(name, dest_uri, shared=True, vnc_port=FIRST_PORT + index,
                            vnc_listen="127.0.0.1", migrate_uri=migrate_uri)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for future in [pool.submit(move, i, n) for i, n in enumerate(names)]:
            future.result()
    return time.monotonic() - started


def main() -> None:
    """Boot the guests, evacuate them there and back at each parallelism, print the times."""
    GUEST_CACHE.mkdir(parents=True, exist_ok=True)
    GUEST_CACHE.chmod(0o755)
    image = ensure_guest_image(GUEST_CACHE)
    second = second_host_start()
    workdir = Path(tempfile.mkdtemp(prefix="portal-bench-", dir="/var/tmp"))
    workdir.chmod(0o755)
    here, there = Hypervisor(URI), Hypervisor(second.uri)
    names = [unique(f"portalevac{i}") for i in range(VMS)]
    results: list[tuple[int, str, float]] = []
    try:
        for hv in (here, there):
            hv.ensure_network(_network_xml())
        for index, name in enumerate(names):
            _define(here, name, index, workdir, image)
            here.start(name)
        for name in names:
            console = Console(URI, name)
            console.send("\r")
            console.expect("migrant login:", timeout=600)
            console.close()
        for parallel in PARALLEL:
            results.append((parallel, "there", _evacuate(here, second.uri, "", names,
                                                         parallel)))
            results.append((parallel, "back", _evacuate(there, URI, f"tcp://{SUBNET}.1",
                                                        names, parallel)))
    finally:
        for name in names:
            for hv in (here, there):
                hv.undefine_domain(name)
        close_all()
        second_host_stop(second)
        for name in names:
            here.undefine_domain(name)
        for action in ("net-destroy", "net-undefine"):
            subprocess.run(["virsh", "-q", "-c", URI, action, NETWORK], capture_output=True,
                           check=False, timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)
    for parallel, way, seconds in results:
        print(f"evacuation of {VMS} running demo guests (192 MiB, TCG), {parallel} at a time, "
              f"{way}: {seconds:.2f} s")


if __name__ == "__main__":
    main()
