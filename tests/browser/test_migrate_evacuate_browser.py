"""Browser tier: an admin migrates a VM from its page and evacuates a host from the host page.

Two real hosts: qemu:///system (hv1, `test_portal_qemu.real_site`) and a second libvirtd in
its own namespaces (hv2, `test_migration_portal_qemu.two_hosts`), one shared datastore. Two
demo guests are installed on hv1. At 1280 px the admin moves the first to hv2 with the Migrate
card and watches it go; the second is moved by the service; then the admin puts hv2 into
maintenance and watches its Evacuation card (htmx polls it) until both VMs are back on hv1,
and leaves maintenance. The portal is pytest-django's live server; the operations its pages
queue run in `Worker`, a thread of the test process standing in for the task queue's worker
(the test's in-memory database is not reachable from a qcluster process). The worker holds an
operation back until the page has shown it queued, and the evacuation pauses after its first
VM, so that what is under way is seen for certain (then also by a page without JavaScript);
the end state is checked in the database and in libvirt on both hosts, not only on the pages.
The second host's teardown is checked to leave no daemon, namespace or guest running.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.chromium import chromium
from tests.browser.narrow_pages import DESKTOP, PHONE, Visit
from tests.integration.second_host import (
    SUBNET,
    SecondHost,
    second_host_start,
    second_host_stop,
)
from tests.integration.test_migration_portal_qemu import two_hosts  # noqa: F401
from tests.integration.test_portal_qemu import real_site, suffix  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.hypervisor]

SETTLE_SECONDS = 120  # the longest an operation of this test may take
PREFIX = "bm-"  # this test's VM names


def _guest_processes() -> list[str]:
    """Return the command lines of qemu processes running one of this test's guests."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if args and b"qemu" in args[0] and any(f"guest={PREFIX}".encode() in a for a in args):
            found.append(b" ".join(args).decode(errors="replace")[:200])
    return found


@pytest.fixture(scope="module")
def second_host() -> Iterator[SecondHost]:
    """The second libvirtd (`tests.integration.second_host`), checked gone afterwards."""
    host = second_host_start()
    pids = [int((host.root / "run" / name).read_text().strip())
            for name in ("libvirtd.pid", "virtlogd.pid")]
    try:
        yield host
    finally:
        second_host_stop(host)
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive.append(pid)
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"the second host's daemons outlived it: {alive}"
    assert not Path(f"/run/netns/{host.netns}").exists(), host.netns
    assert not host.root.exists(), host.root
    assert _guest_processes() == []


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with chromium() as launched:
        yield launched


class Worker:
    """Run the operations the portal queues, one after the other, in a thread of its own.

    `hold` cleared keeps the next operation waiting (it stays queued) until it is set again.
    """

    def __init__(self) -> None:
        self.jobs: queue.Queue[int | None] = queue.Queue()
        self.hold = threading.Event()
        self.hold.set()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, name="portal-worker", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from django.db import connection

        from operations.runner import operation_run

        while True:
            op_id = self.jobs.get()
            try:
                if op_id is None:
                    return
                self.hold.wait(SETTLE_SECONDS)
                read_uncommitted(connection)
                operation_run(operation_id=op_id)
            except Exception as exc:  # noqa: BLE001 - reported by idle()
                self.errors.append(f"operation {op_id}: {exc!r}")
            finally:
                connection.close()
                self.jobs.task_done()

    def idle(self, timeout: float = SETTLE_SECONDS) -> None:
        """Wait until every operation handed over has run; fail on a crash or a timeout."""
        deadline = time.monotonic() + timeout
        while self.jobs.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not self.jobs.unfinished_tasks, "the worker did not finish in time"
        assert not self.errors, self.errors

    def stop(self) -> None:
        self.hold.set()
        self.jobs.put(None)
        self.thread.join(SETTLE_SECONDS)


def read_uncommitted(connection) -> None:  # noqa: ANN001
    """Let this connection read without taking SQLite's table locks.

    The test database lives in memory in SQLite's shared-cache mode: the live server's
    connection and the worker's share one cache, where a reader locks each table it reads
    and a writer meeting that lock fails at once ("database table is locked"), with no busy
    wait. Neither side then blocks the other (the portal's own SQLite runs in WAL mode).
    """
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA read_uncommitted = 1")


@pytest.fixture
def worker(monkeypatch) -> Iterator[Worker]:
    """Hand the operations the portal enqueues to a Worker instead of running them at once."""
    import django_q.tasks
    from django.db import connection

    from operations.requests import RUN_TASK

    read_uncommitted(connection)  # the test's and the live server's connection
    running = Worker()
    original = django_q.tasks.async_task

    def async_task(func, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if func == RUN_TASK:
            running.jobs.put(args[0])
            return None
        return original(func, *args, **kwargs)

    monkeypatch.setattr(django_q.tasks, "async_task", async_task)
    yield running
    running.stop()


def _install(site, worker: Worker, name: str):  # noqa: ANN001, ANN202
    from vms.models import VirtualMachine
    from vms.services.workflow import vm_request_approve, vm_request_create

    req = vm_request_create(requester=site.admin, name=name, template=site.template, vcpus=1,
                            memory_mib=64, disk_gib=1, purpose="browser tier migration",
                            security_domain=site.domain)
    vm_request_approve(request=req, actor=site.another_admin())
    worker.idle()
    return VirtualMachine.objects.get(request=req)


def _host_cell(page) -> object:  # noqa: ANN001
    return page.locator("#vm-live dt:text-is('Host') + dd")


def _on(vm, host, there, away) -> None:  # noqa: ANN001
    """Assert the VM is running on `host` (libvirt `there`) and gone from `away`."""
    from vms.models import VMState

    vm.refresh_from_db()
    assert (vm.host_id, vm.state) == (host.pk, VMState.RUNNING), (vm.host, vm.state)
    assert there.domain(vm.domain_name).state == "running"
    assert away.find_domain(vm.domain_name) is None


def test_an_admin_migrates_a_vm_and_evacuates_a_host_watching_the_progress(
        browser, live_server, two_hosts, worker, settings, monkeypatch):  # noqa: F811
    from playwright.sync_api import expect

    from hosts.models import Host, HostStatus
    from hosts.virt import Hypervisor
    from operations.models import Operation, OperationKind, OperationStatus
    from vms.services import evacuation
    from vms.services.migration import vm_migrate_request

    settings.PORTAL = {**settings.PORTAL, "EVACUATE_PARALLEL": 1}
    site, hv2, there = two_hosts
    hv1, here = site.host, Hypervisor("qemu:///system")
    Host.objects.filter(pk=hv2.pk).update(status=HostStatus.DOWN)  # the installs go to hv1
    Host.objects.filter(pk__in=[hv1.pk, hv2.pk]).update(cpu_overcommit=4)
    # hv2's qemu sends a VM back to hv1 at this machine's end of their link.
    Host.objects.filter(pk=hv1.pk).update(address=f"{SUBNET}.1")
    first, second = (_install(site, worker, f"{PREFIX}{suffix()}") for _ in range(2))
    assert first.host_id == second.host_id == hv1.pk
    Host.objects.filter(pk=hv2.pk).update(status=HostStatus.UP)

    midway, go_on = threading.Event(), threading.Event()
    visit = Visit(browser, live_server.url, "admin", site.admin)
    page = visit.page
    try:
        # 1. The Migrate card: hv2 chosen, submitted; held queued until the page showed it.
        visit.width(DESKTOP)
        worker.hold.clear()
        visit.goto(f"/vms/{first.pk}/")
        expect(_host_cell(page)).to_have_text(hv1.name)
        page.select_option("#migrate-form select[name=destination]", label=hv2.name)
        with page.expect_navigation():
            page.click('#migrate-form button[data-action="migrate"]')
        expect(page.locator("#vm-migrate")).to_contain_text(
            f"{first.name} is moving to {hv2.name}")
        notice = page.locator("#vm-op-notice")
        expect(notice).to_contain_text(re.compile(r"is queued|is under way"))
        seen = [notice.inner_text()]
        visit.shot("vm-migrate-under-way", DESKTOP)
        worker.hold.set()
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:  # htmx refreshes #vm-live every 3 s
            if notice.count():
                seen.append(notice.inner_text())
            if (_host_cell(page).inner_text() == hv2.name and page.locator(
                    "#vm-state [data-state]").get_attribute("data-state") == "running"):
                break
            page.wait_for_timeout(300)
        expect(_host_cell(page)).to_have_text(hv2.name)
        expect(page.locator("#vm-state [data-state]")).to_have_attribute("data-state", "running")
        under_way = [t for t in seen if "queued" in t or "under way" in t]
        assert under_way, seen
        assert any("Migrating to" in t or "copied" in t or "queued" in t for t in under_way)
        worker.idle()
        migrate = Operation.objects.get(vm=first, kind=OperationKind.MIGRATE)
        assert (migrate.status, migrate.host_id) == (OperationStatus.SUCCEEDED, hv2.pk)
        _on(first, hv2, there, here)
        visit.goto(f"/vms/{first.pk}/")
        visit.shot("vm-migrated", DESKTOP)

        # The second VM joins it there, so that hv2 holds two running VMs.
        vm_migrate_request(vm=second, actor=site.admin, destination=hv2)
        worker.idle()
        _on(second, hv2, there, here)

        # 2. Maintenance on hv2 evacuates it; the evacuation waits after its first VM moved.
        progress = evacuation._Evacuation.progress

        def held(self) -> None:  # noqa: ANN001
            progress(self)
            if self.moved == 1 and self.total > 1:
                midway.set()
                go_on.wait(SETTLE_SECONDS)

        monkeypatch.setattr(evacuation._Evacuation, "progress", held)
        visit.goto(f"/hosts/{hv2.pk}/")
        with page.expect_navigation():
            page.click("#host-maintenance")
        expect(page.locator(".alert-success")).to_contain_text(
            f"The VMs left on {hv2.name} are being moved to other hosts.")
        card = page.locator("#host-evacuation")
        expect(card).to_be_visible()
        # htmx reloads the card every 3 s while the evacuation runs.
        expect(page.locator("#host-evacuation-summary")).to_contain_text(
            "1 of 2 moved", timeout=SETTLE_SECONDS * 1000)
        assert midway.is_set()
        done_row = card.locator("tbody tr", has=page.locator('[data-status="succeeded"]'))
        expect(done_row).to_have_count(1)
        expect(done_row.locator("td").nth(1)).to_have_text(hv1.name)
        visit.shot("host-evacuation-under-way", DESKTOP)
        visit.width(PHONE)
        scroll, window = visit.widths()
        assert scroll <= window, ("sideways scroll at 375 px", scroll, window)
        visit.shot("host-evacuation-under-way", PHONE)
        visit.width(DESKTOP)
        # Without JavaScript nothing polls; loading the page shows the same progress.
        plain = Visit(browser, live_server.url, "admin", site.admin, javascript=False)
        try:
            plain.width(DESKTOP)
            plain.goto(f"/hosts/{hv2.pk}/")
            expect(plain.page.locator("#host-evacuation-summary")).to_contain_text(
                "1 of 2 moved")
            expect(plain.page.locator('#host-evacuation tbody [data-status="succeeded"]')
                   ).to_have_count(1)
        finally:
            plain.close()
        go_on.set()
        expect(page.locator("#host-evacuation-summary")).to_contain_text(
            f"All 2 VMs moved off {hv2.name}.", timeout=SETTLE_SECONDS * 1000)
        worker.idle()
        visit.goto(f"/hosts/{hv2.pk}/")
        rows = card.locator("tbody tr[data-evacuation-vm]")
        expect(rows).to_have_count(2)
        for vm in (first, second):
            row = card.locator(f'tbody tr[data-evacuation-vm="{vm.name}"]')
            expect(row.locator("td").nth(1)).to_have_text(hv1.name)
            expect(row.locator('[data-status="succeeded"]')).to_have_count(1)
        expect(page.get_by_text("No VM runs here.")).to_be_visible()
        visit.shot("host-evacuated", DESKTOP)
        parent = Operation.objects.get(kind=OperationKind.EVACUATE, host=hv2)
        assert parent.status == OperationStatus.SUCCEEDED, (parent.message, parent.detail)
        children = list(parent.children.all())
        assert sorted(c.vm_id for c in children) == sorted([first.pk, second.pk])
        assert all((c.kind, c.status, c.host_id) == (
            OperationKind.MIGRATE, OperationStatus.SUCCEEDED, hv1.pk) for c in children)
        for vm in (first, second):
            _on(vm, hv1, here, there)

        # hv1's page lists both VMs; hv2 leaves maintenance with one click.
        visit.goto(f"/hosts/{hv1.pk}/")
        for vm in (first, second):
            expect(page.locator("main table tbody tr", has_text=vm.name).first).to_be_visible()
        visit.goto(f"/hosts/{hv2.pk}/")
        with page.expect_navigation():
            page.click("#host-maintenance-leave")
        expect(page.locator(".alert-success")).to_contain_text(
            f"{hv2.name} left maintenance and takes new VMs again.")
        expect(page.locator("#host-maintenance")).to_be_visible()
        hv2.refresh_from_db()
        assert hv2.status == HostStatus.UP
        assert visit.errors == []
    finally:
        go_on.set()  # a failure half-way must not leave the worker waiting
        worker.hold.set()
        visit.close()
