"""Giving back what a failed operation took, in reverse order."""

from __future__ import annotations

import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

Steps = list[tuple[str, Callable[[], None]]]


def undo_steps(owner: object, steps: Steps) -> None:
    """Run each undo step, newest first, carrying on past failures (they are logged)."""
    for what, step in reversed(steps):
        try:
            step()
        except Exception:  # keep undoing the rest; the reconciler reports what is left
            logger.exception("could not give back the %s of %s", what, owner)
