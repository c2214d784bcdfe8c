"""django-q2's ORM broker, counting deliveries so that a killed task does not come back forever.

The ORM broker hands a task out by moving its row's lock `retry` seconds ahead and deletes the
row when the result is saved. A worker killed by the cluster's timeout guard saves nothing, so
the row is handed out again every `retry` seconds, for ever. This broker keeps a delivery count
in the task itself (the row's signed payload, rewritten on each hand-out in the same
conditional UPDATE that takes the lock) and, past `TASK_MAX_DELIVERIES`, deletes the row and
records the task as failed, where the admin's task pages show it.
"""

from __future__ import annotations

import logging
from time import sleep

from django.conf import settings
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.monitor import save_task
from django_q.signing import BadSignature, SignedPackage

logger = logging.getLogger(__name__)

DELIVERIES = "portal_deliveries"


def max_deliveries() -> int:
    """Return how many times a task is handed to a worker at most."""
    return max(1, int(getattr(settings, "TASK_MAX_DELIVERIES", 3)))


class BoundedORM(ORM):
    """The ORM broker, giving a task up after `TASK_MAX_DELIVERIES` deliveries."""

    def dequeue(self) -> list[tuple[int, str]] | None:
        """Take up to BULK due tasks, counting this delivery in each; give up spent ones."""
        rows = list(self.get_connection().filter(key=self.list_key,
                                                 lock__lt=timezone.now())[:Conf.BULK])
        if not rows:
            sleep(Conf.POLL)  # an empty queue: spare the CPU, as the ORM broker does
            return None
        taken = []
        for row in rows:
            claim = self.get_connection().filter(id=row.id, lock=row.lock)
            try:
                task = SignedPackage.loads(row.payload)
            except (TypeError, BadSignature):
                # The pusher reports and drops an unreadable package, as before.
                if claim.update(lock=self.timeout(row)):
                    taken.append((row.pk, row.payload))
                continue
            deliveries = int(task.get(DELIVERIES, 0)) + 1
            if deliveries > max_deliveries():
                # Another cluster may have claimed it meanwhile: only the deleter records it.
                if claim.delete()[0]:
                    self._give_up(task, deliveries - 1)
                continue
            task[DELIVERIES] = deliveries
            payload = SignedPackage.dumps(task)
            if claim.update(lock=self.timeout(row), payload=payload):
                taken.append((row.pk, payload))
        return taken

    def _give_up(self, task: dict, deliveries: int) -> None:
        """Record the task as failed: it was handed out `deliveries` times and never finished."""
        logger.error("task %s (%s) given up after %s deliveries", task.get("name"),
                     task.get("func"), deliveries)
        task.update(
            success=False, stopped=timezone.now(), cluster=Conf.CLUSTER_NAME,
            result=(f"Given up after {deliveries} deliveries: each time its worker was "
                    "killed (timeout guard) or lost before it finished."),
        )
        task.pop("ack_id", None)
        save_task(task, self)
