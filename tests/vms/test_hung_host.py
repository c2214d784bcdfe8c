"""A hung host does not starve the queue: two workers, a host that accepts TCP and never
answers, and a healthy host whose operation must not wait for the hung one.

Real parts: libvirt's client against a real hung TCP listener, the test driver as the healthy
host, the real runner (`operations.tasks.run_operation`, host refresh handlers, per-host admission,
the kick of waiting operations) on two worker threads fed by the queue the broker would be.
"""

from __future__ import annotations

import queue
import threading
import time
from datetime import datetime

import pytest
from django.db import connections

from hosts.models import Host
from hosts.virt import connection as conn_module
from operations import registry
from operations.models import Operation, OperationKind, OperationStatus
from operations.tasks import run_operation
from tests import factories as f
from tests.hosts.test_connect_bounds import HungListener

TIMEOUT = 2.0


@pytest.fixture
def hung():
    listener = HungListener()
    yield listener
    listener.close()


@pytest.mark.postgres  # real concurrent writers: two workers on one database
@pytest.mark.django_db(transaction=True)
def test_a_hung_host_holds_at_most_its_cap_of_workers_and_the_fleet_keeps_moving(
        hung, settings, monkeypatch):
    settings.PORTAL = {**settings.PORTAL, "HOST_MAX_OPERATIONS": 1}
    monkeypatch.setattr(conn_module, "CONNECT_TIMEOUT", TIMEOUT)
    monkeypatch.setattr(conn_module, "CONNECT_BACKOFF", 60.0)
    stuck = f.HostFactory(name="hung", uri=hung.uri)
    healthy = f.HostFactory(name="healthy", uri="test:///default", accel="")

    # The broker: operation_enqueue hands ids to django_q.tasks.async_task.
    tasks: queue.Queue = queue.Queue()
    monkeypatch.setattr("django_q.tasks.async_task",
                        lambda func, *args, **kw: tasks.put((func, args)))

    # Count the runs under way on the hung host, as the workers see them.
    real_refresh = registry.SPECS[OperationKind.HOST_REFRESH].handler
    under_way = {"now": 0, "most": 0}
    lock = threading.Lock()

    def counted(op):
        if op.host_id != stuck.pk:
            return real_refresh(op)
        with lock:
            under_way["now"] += 1
            under_way["most"] = max(under_way["most"], under_way["now"])
        try:
            return real_refresh(op)
        finally:
            with lock:
                under_way["now"] -= 1

    monkeypatch.setattr(registry.SPECS[OperationKind.HOST_REFRESH], "handler", counted)

    hung_ops = [Operation.objects.create(kind=OperationKind.HOST_REFRESH, host=stuck)
                for _ in range(3)]
    healthy_op = Operation.objects.create(kind=OperationKind.HOST_REFRESH, host=healthy)
    for op in [*hung_ops, healthy_op]:
        tasks.put(("operations.tasks.run_operation", (op.pk,)))

    errors: list[BaseException] = []

    def worker() -> None:
        try:
            while True:
                try:
                    func, args = tasks.get(timeout=3 * TIMEOUT)
                except queue.Empty:
                    return
                assert func == "operations.tasks.run_operation"
                run_operation(*args)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
        finally:
            connections.close_all()

    started = time.monotonic()
    workers = [threading.Thread(target=worker) for _ in range(2)]
    for w in workers:
        w.start()

    def all_done() -> bool:
        return not Operation.objects.filter(
            status__in=[OperationStatus.QUEUED, OperationStatus.RUNNING]).exists()

    while not all_done() and time.monotonic() - started < 10 * TIMEOUT:
        time.sleep(0.1)
    elapsed = time.monotonic() - started
    for w in workers:
        w.join(5 * TIMEOUT)
    assert not errors, errors
    assert all_done()
    # Bounded: the first connect gives up after the timeout, the rest fail fast.
    assert elapsed < 3 * TIMEOUT

    healthy_op.refresh_from_db()
    assert healthy_op.status == OperationStatus.SUCCEEDED, healthy_op.detail
    hung_done = list(Operation.objects.filter(pk__in=[o.pk for o in hung_ops]))
    for op in hung_done:
        assert op.status == OperationStatus.FAILED
        assert f"cannot connect to host 127.0.0.1 ({hung.uri})" in op.detail
    # One run waited for the connect timeout; the others failed at once on the back-off.
    waited = [op for op in hung_done if "the next attempt in" not in op.detail]
    assert len(waited) == 1
    # The healthy host's operation did not wait for the hung host's connect.
    assert healthy_op.finished_at < waited[0].finished_at
    assert under_way["most"] == 1  # the hung host never held more than its cap of workers
    assert len(hung.accepted) == 1  # one connect reached the host; the others backed off
    stuck.refresh_from_db()
    assert stuck.last_error.startswith(f"cannot connect to host 127.0.0.1 ({hung.uri})")
    assert "check that libvirtd runs there" in stuck.last_error
    assert Host.objects.get(pk=healthy.pk).accel == "test"


QCLUSTER_SETTINGS = '''
from tests.settings import *  # noqa: F403
from tests.settings import PORTAL, Q_CLUSTER

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": %(db)r,
                         "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20,
                                     "init_command": "PRAGMA journal_mode=WAL;"}}}
Q_CLUSTER = {**Q_CLUSTER, "sync": False, "workers": 2, "timeout": 60, "retry": 120,
             "poll": 0.2, "orm": "default", "broker_class": "core.broker.BoundedORM"}
Q_CLUSTER.pop("redis", None)
PORTAL = {**PORTAL, "HOST_MAX_OPERATIONS": 1}
'''

SETUP = '''
from hosts.models import Host
from operations.models import OperationKind
from operations.requests import operation_create

stuck = Host.objects.create(name="hung", uri=%(uri)r, vcpus=8, memory_mib=16384)
healthy = Host.objects.create(name="healthy", uri="test:///default", vcpus=8,
                              memory_mib=16384)
ops = [operation_create(kind=OperationKind.HOST_REFRESH, host=stuck) for _ in range(3)]
ops.append(operation_create(kind=OperationKind.HOST_REFRESH, host=healthy))
'''


def test_with_real_workers_a_hung_host_does_not_starve_the_healthy_one(hung, tmp_path):
    """The same with a real `qcluster` (two worker processes, the ORM broker, SQLite)."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    package = tmp_path / "qsettings"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "settings.py").write_text(QCLUSTER_SETTINGS % {"db": str(tmp_path / "q.db")})
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO_ROOT}",
           "DJANGO_SETTINGS_MODULE": "qsettings.settings",
           "PORTAL_LIBVIRT_CONNECT_TIMEOUT": str(TIMEOUT),
           "PORTAL_LIBVIRT_CONNECT_BACKOFF": "60"}
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    manage = [sys.executable, str(REPO_ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, cwd=REPO_ROOT,
                   timeout=300)
    subprocess.run([*manage, "shell", "-c", SETUP % {"uri": hung.uri}], env=env, check=True,
                   cwd=REPO_ROOT, timeout=120, capture_output=True)
    log = (tmp_path / "qcluster.log").open("w")
    cluster = subprocess.Popen([*manage, "qcluster"], env=env, cwd=REPO_ROOT, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        db = sqlite3.connect(tmp_path / "q.db", timeout=20)
        query = ("select o.id, h.name, o.status, o.started_at, o.finished_at, o.detail "
                 "from vms_operation o join hosts_host h on h.id = o.host_id order by o.id")
        deadline = time.monotonic() + 120  # generous: cluster start-up plus a few timeouts
        while time.monotonic() < deadline:
            rows = db.execute(query).fetchall()
            if all(r[2] in ("succeeded", "failed") for r in rows):
                break
            time.sleep(0.5)
        context = (rows, (tmp_path / "qcluster.log").read_text())
        assert all(r[2] in ("succeeded", "failed") for r in rows), context
    finally:
        os.killpg(cluster.pid, signal.SIGKILL)
        cluster.wait(timeout=30)
        log.close()

    healthy = [r for r in rows if r[1] == "healthy"]
    stuck = [r for r in rows if r[1] == "hung"]
    assert [r[2] for r in healthy] == ["succeeded"], context
    assert [r[2] for r in stuck] == ["failed"] * 3, context
    assert all(f"cannot connect to host 127.0.0.1 ({hung.uri})" in r[5] for r in stuck)
    # The healthy host's operation finished before the hung host's first connect gave up.
    assert healthy[0][4] < min(r[4] for r in stuck), context
    # The hung host's runs never overlapped (its cap is 1), and each was bounded.
    runs = sorted((r[3], r[4]) for r in stuck)
    assert all(later[0] >= earlier[1] for earlier, later in zip(runs, runs[1:], strict=False))
    seconds = [(datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()
               for a, b in runs]
    assert max(seconds) < 3 * TIMEOUT, seconds
    # Each worker process reached the hung host at most once; then it backed off.
    assert 1 <= len(hung.accepted) <= 2
    last_error = db.execute("select last_error from hosts_host where name = 'hung'").fetchone()
    assert last_error[0].startswith(f"cannot connect to host 127.0.0.1 ({hung.uri})")
