"""Measure a live migration of the demo guest between two libvirt hosts on this machine.

The second host is the hypervisor tier's (`tests/integration/second_host.py`): a libvirtd in
its own network and mount namespaces, reached over qemu+tcp on a veth pair. The demo guest
(192 MiB, TCG: the domain type the tests give it)
boots on this machine's libvirtd from a disk in a folder both hosts see (a shared datastore),
reaches its login prompt, and then moves there and back BENCH_REPEAT times with
`Hypervisor.migrate_live`; each move is timed from the call to its return (the guest running
on the other host, its snapshots' metadata redefined). Then the same on a datastore that is
not shared (a folder under /var/lib/libvirt, private to each host's mount namespace): each
move copies the disk's overlay while the guest runs, and the first one the template's image
too. Prints every time and the median of each.

    PYTHONPATH=. .venv/bin/python bench/migration.py      (run as root: it makes namespaces)
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# The guest's seed is built by the portal's own code, which needs Django's settings.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
import django  # noqa: E402

django.setup()

from hosts.guest_image import ensure_guest_image  # noqa: E402
from hosts.virt import Hypervisor, close_all  # noqa: E402
from tests.integration.guest import GUEST_CACHE  # noqa: E402
from tests.integration.qemu import URI, unique  # noqa: E402
from tests.integration.second_host import (  # noqa: E402
    SUBNET,
    second_host_start,
    second_host_stop,
)
from tests.integration.test_migration_qemu import (  # noqa: E402
    NETWORK,
    Console,
    _define,
    _network_xml,
)

REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
PRIVATE_ROOT = "/var/lib/libvirt"  # private to each host's mount namespace


def _measure(here: Hypervisor, there: Hypervisor, uri2: str, image: Path, *,
             shared: bool) -> list[float]:
    """Boot the guest on a datastore (shared or not), move it there and back; return times."""
    tag = unique("pb")[-6:]
    if shared:
        workdir = Path(tempfile.mkdtemp(prefix="portal-bench-", dir="/var/tmp"))
        base = image
    else:
        # The same path on both hosts, two folders in fact: each move copies the disk.
        workdir = Path(PRIVATE_ROOT) / f"portal-bench-{tag}"
        for hv in (here, there):
            hv.ensure_pool(f"pbench-{tag}", str(workdir))
        base = workdir / "base.qcow2"
        shutil.copyfile(image, base)
        base.chmod(0o644)
    workdir.chmod(0o755)
    name = unique("portalbench")
    times: list[float] = []
    try:
        _define(here, name, workdir, base)
        here.start(name)
        console = Console(URI, name)
        console.send("\r")
        console.expect("migrant login:", timeout=180)
        console.close()
        moves = [(here, uri2, ""), (there, URI, f"tcp://{SUBNET}.1")]
        for _ in range(REPEAT):
            for source, dest_uri, migrate_uri in moves:
                started = time.monotonic()
                source.migrate_live(name, dest_uri, shared=shared, vnc_port=5990,
                                    vnc_listen="127.0.0.1", migrate_uri=migrate_uri)
                times.append(time.monotonic() - started)
    finally:
        for hv in (here, there):
            hv.undefine_domain(name)
            if not shared:
                for action in ("pool-destroy", "pool-undefine"):
                    subprocess.run(["virsh", "-q", "-c", hv.uri, action, f"pbench-{tag}"],
                                   capture_output=True, check=False, timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)
    return times


def main() -> None:
    """Boot the guest, move it there and back REPEAT times per datastore kind; print times."""
    GUEST_CACHE.mkdir(parents=True, exist_ok=True)
    GUEST_CACHE.chmod(0o755)
    image = ensure_guest_image(GUEST_CACHE)
    second = second_host_start()
    here, there = Hypervisor(URI), Hypervisor(second.uri)
    results: dict[str, list[float]] = {}
    try:
        for hv in (here, there):
            hv.ensure_network(_network_xml())
        for label, shared in (("shared datastore", True), ("datastore not shared", False)):
            results[label] = _measure(here, there, second.uri, image, shared=shared)
    finally:
        close_all()
        second_host_stop(second)
        for action in ("net-destroy", "net-undefine"):
            subprocess.run(["virsh", "-q", "-c", URI, action, NETWORK], capture_output=True,
                           check=False, timeout=60)
    for label, times in results.items():
        print(f"live migration of the demo guest (192 MiB, {label}, {REPEAT} times there and "
              "back): " + ", ".join(f"{t:.2f}" for t in times) + " s")
        print(f"  median {statistics.median(times):.2f} s, best {min(times):.2f} s, "
              f"worst {max(times):.2f} s")


if __name__ == "__main__":
    main()
