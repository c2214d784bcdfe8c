"""Measure the VM list: a 50-row page of a 10,000-VM table, against an N+1 baseline.

The portal's page narrows with select_related/prefetch_related, so its query count does not
grow with the page size; the baseline renders the same table from a plain queryset, as a
first version often does. Runs on a throw-away SQLite database under a temporary directory.

    make bench
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
VAR = tempfile.mkdtemp(prefix="portal-bench-lists-")
# The test settings: static files without a collected manifest, tasks in-process.
os.environ.update({"DJANGO_SETTINGS_MODULE": "tests.settings", "PORTAL_VAR_DIR": VAR,
                   "DJANGO_ALLOWED_HOSTS": "testserver"})
os.environ.pop("DATABASE_URL", None)

VMS = int(os.environ.get("BENCH_VMS", "10000"))
ROUNDS = 15


def setup() -> object:
    """Create an organisation, an admin, a host and VMS VMs with addresses."""
    from django.core.management import call_command

    from core.accounts.models import Organisation, Role, User
    from hosts.models import Datastore, Host, Template
    from networking.models import VLAN, PrivateIP
    from vms.models import VirtualMachine

    call_command("migrate", verbosity=0)
    org = Organisation.objects.create(name="Bench", slug="bench")
    admin = User.objects.create(username="admin", role=Role.ADMIN, organisation=org,
                                is_staff=True, is_superuser=True)
    host = Host.objects.create(name="hv", uri="test:///default", vcpus=64, memory_mib=1 << 20,
                               accel="test")
    ds = Datastore.objects.create(name="ds", path="/srv/ds")
    template = Template.objects.create(name="t", datastore=ds, image="t.qcow2")
    vlan = VLAN.objects.create(name="v", tag=1, subnet="10.0.0.0/16")
    vms = VirtualMachine.objects.bulk_create(
        VirtualMachine(name=f"vm-{i:05d}", owner=admin, organisation=org, template=template,
                       host=host, vcpus=1, memory_mib=512, disk_gib=1, state="running")
        for i in range(VMS))
    PrivateIP.objects.bulk_create(
        PrivateIP(vlan=vlan, address=f"10.0.{i // 250}.{i % 250 + 1}", vm=vm,
                  mac=f"02:00:00:00:{i // 256:02x}:{i % 256:02x}")
        for i, vm in enumerate(vms))
    return admin


def timed(call) -> tuple[float, int]:  # noqa: ANN001
    """Return the median milliseconds of call() and the queries one call makes."""
    from django.db import connection

    call()
    queries = []
    with connection.execute_wrapper(lambda execute, sql, *a: queries.append(sql)
                                    or execute(sql, *a)):
        call()
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), len(queries)


def main() -> None:
    """Time the portal's page and the naive rendering of the same rows."""
    import django

    django.setup()
    from django.test import Client, RequestFactory
    from django_tables2 import RequestConfig

    from vms.models import VirtualMachine
    from vms.tables import VirtualMachineTable

    admin = setup()
    client = Client()
    client.force_login(admin)

    def portal_page() -> None:
        response = client.get("/vms/", {"per_page": 50, "page": 7})
        assert response.status_code == 200 and b"vm-00300" in response.content

    request = RequestFactory().get("/vms/", {"per_page": 50, "page": 7})

    def naive_table() -> None:
        table = VirtualMachineTable(VirtualMachine.objects.all())
        RequestConfig(request, paginate={"per_page": 50}).configure(table)
        html = table.as_html(request)
        assert "vm-00300" in html

    ours, our_queries = timed(portal_page)
    naive, naive_queries = timed(naive_table)
    print(f"VM list, {VMS} VMs, a 50-row page, SQLite, median of {ROUNDS}")
    print(f"portal page (whole response, layout included): {ours:7.1f} ms, "
          f"{our_queries} queries")
    print(f"naive table (the rows alone, no layout):       {naive:7.1f} ms, "
          f"{naive_queries} queries")
    print(f"ratio: {naive / ours:.1f}x; budget: a 50-row page well under 100 ms")


if __name__ == "__main__":
    main()
