"""Giving back what a failed operation took, in reverse order.

Two forms: closures for steps that only the running worker can undo (`undo_steps`), and
recorded steps (`Operation.steps`, plain JSON written before each step is taken) that any
process can undo, so a worker killed half-way leaves nothing that the reconciler cannot find
and give back (`recorded_steps_undo`). Each application registers how to give back the steps
its handlers record (`step_register`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

Steps = list[tuple[str, Callable[[], None]]]
Step = dict[str, object]
# Gives back one recorded step of an owner (a VM); raises when it cannot.
StepUndo = Callable[[object, Step], None]

# What gives back each kind of recorded step, and how it is named to people.
UNDO: dict[str, tuple[StepUndo, Callable[[Step], str]]] = {}
# Steps given back last, and kept while anything else is left (a VM's place on its host, so
# that deleting the VM later still finds and removes what is left there).
KEPT_WHILE_LEFT: set[str] = set()


def step_register(step: str, undo: StepUndo, label: Callable[[Step], str], *,
                  kept_while_left: bool = False) -> None:
    """Register how a kind of recorded step is given back and named."""
    UNDO[step] = (undo, label)
    if kept_while_left:
        KEPT_WHILE_LEFT.add(step)


def undo_steps(owner: object, steps: Steps) -> None:
    """Run each undo step, newest first, carrying on past failures (they are logged)."""
    for what, step in reversed(steps):
        try:
            step()
        except Exception:  # keep undoing the rest; the reconciler reports what is left
            logger.exception("could not give back the %s of %s", what, owner)


def step_label(step: Step) -> str:
    """Return what a recorded step took, in words."""
    entry = UNDO.get(str(step.get("step")))
    return entry[1](step) if entry else str(step)


def recorded_steps_undo(owner: object, steps: list[Step]) -> list[Step]:
    """Give back recorded steps newest first; return those that could not be given back."""
    left: list[Step] = []
    for step in reversed(steps):
        kind = str(step.get("step"))
        if kind in KEPT_WHILE_LEFT and left:
            left.insert(0, step)
            continue
        entry = UNDO.get(kind)
        try:
            if entry is None:
                raise LookupError(f"no undo is known for step {kind!r}")
            entry[0](owner, step)
        except Exception:  # keep undoing the rest; what is left is recorded and shown
            logger.exception("could not give back the %s of %s", step_label(step), owner)
            left.insert(0, step)
    return left
