"""Thin django-q2 task of the engine: it takes an operation's id and runs it."""

from __future__ import annotations

from .admission import operation_after_run
from .models import Operation
from .runner import operation_run


def run_operation(operation_id: int) -> str:
    """Carry out one queued operation, then start what waits for a slot on its host."""
    op = None
    try:
        op = operation_run(operation_id=operation_id)
    finally:
        # Also after a run cut short (the time limit): its slot on the host is free again.
        operation_after_run(op or Operation.objects.filter(pk=operation_id).first())
    return f"{op.status}: {op.message}" if op else "no such operation"
