"""A task whose worker keeps being killed is handed out a bounded number of times, then given up.

The first test drives the broker's API as the cluster's pusher does, ageing the lock as the
passing of `retry` seconds would. The second runs a real `qcluster` on the ORM broker with a
short timeout and a task that the timeout guard has to kill (it blocks SIGALRM, as a thread
stuck in a C call does), and counts how often the task started.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import OrmQ, Task
from django_q.signing import SignedPackage
from django_q.tasks import async_task

from core.broker import DELIVERIES, BoundedORM
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.django_db


def enqueue(broker: BoundedORM) -> str:
    task = {"id": "a1b2", "name": "collect-host-1", "func": "monitoring.tasks.collect_host",
            "args": (1,), "kwargs": {}, "started": timezone.now(), "group": None}
    broker.enqueue(SignedPackage.dumps(task))
    return task["id"]


def age_locks() -> None:
    """Let the locks expire, as `retry` seconds without an acknowledgement would."""
    OrmQ.objects.update(lock=timezone.now() - timedelta(seconds=1))


@pytest.fixture(autouse=True)
def quick_poll(monkeypatch):
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "POLL", 0.01)  # an empty queue makes dequeue sleep this long


def test_the_broker_counts_deliveries_and_gives_a_task_up_after_the_limit(settings):
    settings.TASK_MAX_DELIVERIES = 3
    broker = BoundedORM(list_key="portal-test")
    task_id = enqueue(broker)
    for delivery in (1, 2, 3):
        taken = broker.dequeue()
        assert len(taken) == 1
        assert SignedPackage.loads(taken[0][1])[DELIVERIES] == delivery
        assert not broker.dequeue()  # locked: not handed out twice meanwhile
        age_locks()
    assert broker.dequeue() == []
    assert not OrmQ.objects.exists()
    failed = Task.objects.get(id=task_id)
    assert not failed.success
    assert failed.result.startswith("Given up after 3 deliveries")
    age_locks()
    assert broker.dequeue() is None  # nothing left to hand out, ever


def test_an_acknowledged_task_is_not_delivered_again(settings):
    broker = BoundedORM(list_key="portal-test")
    enqueue(broker)
    ack_id, _payload = broker.dequeue()[0]
    broker.acknowledge(ack_id)
    age_locks()
    assert broker.dequeue() is None


def test_the_orm_broker_of_the_settings_is_the_bounded_one():
    from django.conf import settings as django_settings
    from django_q.brokers import get_broker

    # The Redis broker never redelivers; the ORM one is always the bounded one.
    assert django_settings.Q_CLUSTER.get("redis") or isinstance(get_broker(), BoundedORM)


QCLUSTER_SETTINGS = '''
from tests.settings import *  # noqa: F403
from tests.settings import Q_CLUSTER

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": %(db)r,
                         "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20}}}
Q_CLUSTER = {**Q_CLUSTER, "sync": False, "workers": 1, "timeout": 1, "retry": 3,
             "poll": 0.2, "orm": "default", "broker_class": "core.broker.BoundedORM"}
Q_CLUSTER.pop("redis", None)
TASK_MAX_DELIVERIES = 2
'''


def hang(marker: str) -> None:
    """Note that this delivery started, then hang where django-q's alarm cannot reach."""
    with open(marker, "a") as out:
        out.write("started\n")
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(120)


def test_a_task_killed_by_the_timeout_guard_comes_back_only_up_to_the_limit(tmp_path):
    package = tmp_path / "qsettings"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "settings.py").write_text(QCLUSTER_SETTINGS % {"db": str(tmp_path / "q.db")})
    marker = tmp_path / "started.txt"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO_ROOT}",
           "DJANGO_SETTINGS_MODULE": "qsettings.settings"}
    env.pop("REDIS_URL", None)
    manage = [sys.executable, str(REPO_ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, cwd=REPO_ROOT,
                   timeout=300)
    code = ("from django_q.tasks import async_task; "
            f"async_task('tests.portal.test_task_deliveries.hang', {str(marker)!r}, "
            "task_name='hang-1')")
    subprocess.run([*manage, "shell", "-c", code], env=env, check=True, cwd=REPO_ROOT,
                   timeout=120)
    log = (tmp_path / "qcluster.log").open("w")
    cluster = subprocess.Popen([*manage, "qcluster"], env=env, cwd=REPO_ROOT,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        db = sqlite3.connect(tmp_path / "q.db")
        # Generous: two deliveries take about 2 x (timeout + guard) plus retry seconds.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            queued = db.execute("select count(*) from django_q_ormq").fetchone()[0]
            failed = db.execute("select count(*) from django_q_task where success = 0 and "
                                "name = 'hang-1'").fetchone()[0]
            if (queued, failed) == (0, 1):
                break
            time.sleep(0.5)
        assert (queued, failed) == (0, 1), (tmp_path / "qcluster.log").read_text()
        # The lock of a redelivery would have expired by now: no third start.
        time.sleep(4)
        assert marker.read_text().count("started") == 2
        code = ("from django_q.models import Task; "
                "print(Task.objects.get(name='hang-1').result)")
        out = subprocess.run([*manage, "shell", "-c", code], env=env, cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=120).stdout
        assert out.strip().splitlines()[-1].startswith("Given up after 2 deliveries")
    finally:
        # The worker hangs with the alarm blocked: stop the whole process group.
        os.killpg(cluster.pid, signal.SIGKILL)
        cluster.wait(timeout=30)
        log.close()


def test_tasks_in_the_test_settings_still_run_in_process():
    # The suite's own settings keep sync mode, whatever the broker class.
    assert async_task("math.floor", 2.5)
