"""Measure private IP allocation on PostgreSQL: the portal's allocator against a naive one.

Two allocator processes (as two workers would be), each on its own connection, give
addresses to VMs at once. The
portal's `ip_allocate` locks one free row with SKIP LOCKED; the baseline scans the used
addresses and takes the first free one without a lock, as a hand-written pool often does.
Prints allocations per second for both, their ratio, and duplicates found.

    make bench   (DATABASE_URL defaults to postgres://postgres@127.0.0.1:5432/portal_bench)
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/portal_bench")

ADDRESSES = int(os.environ.get("BENCH_ADDRESSES", "2000"))
ALLOCATORS = 2


def ensure_database() -> None:
    """Create the benchmark database if it does not exist."""
    import psycopg
    from environ import Env

    url = Env.db_url_config(os.environ["DATABASE_URL"])
    with psycopg.connect(host=url["HOST"], port=url["PORT"] or 5432, user=url["USER"],
                         password=url["PASSWORD"] or None, dbname="postgres",
                         autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            [url["NAME"]]).fetchone():
            conn.execute(f'CREATE DATABASE "{url["NAME"]}"')


def setup() -> list:
    """Make a VLAN with ADDRESSES free addresses and as many VMs to give them to."""
    from django.core.management import call_command

    from core.accounts.models import Organisation, User
    from hosts.models import Datastore, Template
    from networking.models import VLAN, PrivateIP
    from vms.models import VirtualMachine

    call_command("migrate", verbosity=0)
    VirtualMachine.objects.filter(name__startswith="bench-").delete()
    PrivateIP.objects.filter(vlan__name="bench").delete()
    VLAN.objects.filter(name="bench").delete()
    org, _ = Organisation.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    user, _ = User.objects.get_or_create(username="bench", defaults={"organisation": org})
    ds, _ = Datastore.objects.get_or_create(name="bench", defaults={"path": "/srv/bench"})
    template, _ = Template.objects.get_or_create(name="bench", defaults={
        "datastore": ds, "image": "bench.qcow2"})
    vlan = VLAN.objects.create(name="bench", tag=4000, subnet="10.200.0.0/16")
    PrivateIP.objects.bulk_create(
        PrivateIP(vlan=vlan, address=f"10.200.{i // 250}.{i % 250 + 1}",
                  mac=f"02:be:00:00:{i // 256:02x}:{i % 256:02x}")
        for i in range(ADDRESSES))
    VirtualMachine.objects.bulk_create(
        VirtualMachine(name=f"bench-{i}", owner=user, organisation=org, template=template,
                       vcpus=1, memory_mib=256, disk_gib=1) for i in range(ADDRESSES))
    return list(VirtualMachine.objects.filter(name__startswith="bench-").order_by("id"))


def reset() -> None:
    """Free every benchmark address again, and vacuum as autovacuum would between bursts."""
    from django.db import connection

    from networking.models import PrivateIP

    PrivateIP.objects.filter(vlan__name="bench").update(vm=None, allocated_at=None)
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {PrivateIP._meta.db_table}")


def naive_allocate(vm, vlan) -> str:  # noqa: ANN001
    """Scan the used addresses, take the first free one, no lock (the baseline)."""
    from django.db import transaction

    from networking.models import PrivateIP

    with transaction.atomic():
        used = set(PrivateIP.objects.filter(vlan=vlan, vm__isnull=False)
                   .values_list("id", flat=True))
        for pk, address in PrivateIP.objects.filter(vlan=vlan).order_by("id").values_list(
                "id", "address"):
            if pk not in used:
                PrivateIP.objects.filter(pk=pk).update(vm=vm)
                return address
    raise RuntimeError("pool exhausted")


def _worker(allocate, chunk, ready, out) -> None:  # noqa: ANN001
    from django.db import connection, connections

    connections.close_all()  # a forked process must not share its parent's connection
    connection.ensure_connection()
    ready.wait()  # connected; measure allocation only, not process start-up
    start = time.perf_counter()
    got = [allocate(vm) for vm in chunk]
    out.put((start, time.perf_counter(), got))


def run(allocate, vms) -> tuple[float, list[str]]:
    """Give every VM an address with ALLOCATORS processes at once; return seconds, results."""
    from django.db import connections

    connections.close_all()
    ctx = multiprocessing.get_context("fork")
    out, ready = ctx.Queue(), ctx.Barrier(ALLOCATORS)
    chunks = [vms[i::ALLOCATORS] for i in range(ALLOCATORS)]
    procs = [ctx.Process(target=_worker, args=(allocate, c, ready, out)) for c in chunks]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    seconds = max(r[1] for r in results) - min(r[0] for r in results)
    return seconds, [a for r in results for a in r[2]]


def main() -> None:
    """Run both allocators over the same pool and print the figures."""
    ensure_database()
    import django

    django.setup()
    from networking.allocation import ip_allocate
    from networking.models import VLAN, PrivateIP

    vms = setup()
    reset()
    vlan = VLAN.objects.get(name="bench")
    seconds, got = run(lambda vm: ip_allocate(vm=vm, vlan=vlan).address, vms)
    held = PrivateIP.objects.filter(vlan=vlan, vm__isnull=False).count()
    ours = (len(got) / seconds, len(got) - len(set(got)), len(vms) - held)
    reset()
    # The baseline is quadratic; measure it on a slice so the run stays short.
    sample = vms[: min(len(vms), 400)]
    seconds, got = run(lambda vm: naive_allocate(vm, vlan), sample)
    held = PrivateIP.objects.filter(vlan=vlan, vm__isnull=False).count()
    naive = (len(got) / seconds, len(got) - len(set(got)), len(sample) - held)
    reset()
    print(f"pool: {ADDRESSES} addresses, {ALLOCATORS} concurrent allocator processes, PostgreSQL")
    print(f"portal ip_allocate: {ours[0]:8.0f} allocations/s, {ours[1]} duplicates, "
          f"{ours[2]} VMs without an address")
    print(f"naive scan-and-take: {naive[0]:7.0f} allocations/s, {naive[1]} duplicates, "
          f"{naive[2]} addresses given twice (lost updates), over {len(sample)} VMs")
    print(f"ratio: {ours[0] / naive[0]:.1f}x")


if __name__ == "__main__":
    main()
