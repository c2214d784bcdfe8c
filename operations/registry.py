"""The registry of operation specs, and the hooks the engine asks of the applications above it.

The engine imports no application: each application registers, in its `AppConfig.ready()`,
the specs of its kinds (`handles`) and, for the targets it owns, the hooks that say what a
failure means for them (`target_register`, `host_hooks_register`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import Operation

Handler = Callable[["Operation"], str]
# The words a target's owner reads for a routine failure of one kind, given the error.
RoutineWords = Callable[["Operation", Exception], str]


@dataclass
class OperationSpec:
    """What the engine knows of one kind of operation."""

    kind: str
    handler: Handler
    # What it acts on ("vm", "host", "nat"): whose hooks answer for its failures.
    target: str = "vm"
    # The target's states from which it may be asked for (None: any), and those in which a
    # failed one still makes sense to retry (None: any).
    request_states: tuple[str, ...] | None = None
    retry_states: tuple[str, ...] | None = None
    # The object permission it needs ("vms.operate_vm"), asked of the actor with the target.
    permission: str | None = None
    # The rows it holds while queued or running: "vm", "host" or both.
    scope: tuple[str, ...] = ("vm",)
    retry_check: Callable[[Operation], str | None] | None = None
    # Its handler records every step it takes (`runner.operation_step`): when one dies, its
    # recorded steps say exactly what is left; of other kinds, only the target's state is known.
    records_steps: bool = False
    # What the target's owner reads when the host could not do it (the raw text is for admins).
    failed_words: str = ""
    # Kinds under way on the same VM that asking for this one cuts short (Force off ends a
    # shut down's wait): they end at once as having given way, and this one is queued.
    preempts: tuple[str, ...] = ()
    # Failures that are routine for this kind, on the user's side rather than the portal's
    # (a guest that ignored a shut down), each with the words its owner reads. Recorded with
    # `routine` set (the raw text still in `detail`), they are not mailed to admins and stay
    # out of the attention list and failure counts.
    routine: dict[type[Exception], RoutineWords] = field(default_factory=dict)

    def routine_words(self, op: Operation, error: BaseException) -> str | None:
        """Return the owner's words when the error is a routine failure of this kind."""
        for kind, words in self.routine.items():
            if isinstance(error, kind):
                return words(op, error)
        return None


SPECS: dict[str, OperationSpec] = {}


def handles(kind: str, *, states: Sequence[str] | None = None,
            request_states: Sequence[str] | None = None,
            retry_check: Callable[[Operation], str | None] | None = None,
            records_steps: bool = False, target: str = "vm",
            scope: Sequence[str] | None = None, permission: str | None = None,
            failed_words: str = "", preempts: Sequence[str] = (),
            routine: dict[type[Exception], RoutineWords] | None = None,
            ) -> Callable[[Handler], Handler]:
    """Register the function that carries out operations of this kind, with its spec.

    `states` are the target's states in which the operation still makes sense (checked
    before a failed one is retried); `request_states` those from which it may be asked for
    (`requests.operation_request`), by default the same. `preempts` and `routine` are
    described on `OperationSpec`.
    """

    def register(func: Handler) -> Handler:
        retry = tuple(states) if states is not None else None
        asked = tuple(request_states) if request_states is not None else retry
        SPECS[kind] = OperationSpec(
            kind=kind, handler=func, target=target, request_states=asked, retry_states=retry,
            permission=permission, scope=tuple(scope) if scope else (target,),
            retry_check=retry_check, records_steps=records_steps, failed_words=failed_words,
            preempts=tuple(preempts), routine=dict(routine or {}))
        return func

    return register


def spec_for(kind: str) -> OperationSpec | None:
    """Return the registered spec of a kind, or None."""
    return SPECS.get(kind)


class TargetHooks:
    """What the engine asks the application that owns an operation's target; a no-op here."""

    def run_refusal(self, op: Operation) -> str | None:
        """Return why the operation must not run at all now (its target is gone), or None."""
        return None

    def succeeded(self, op: Operation) -> None:
        """Note that an operation on the target succeeded."""

    def failure_message(self, op: Operation) -> str:
        """Return what went wrong, in words the target's owner can act on."""
        target = f" of host {op.host}" if op.host_id else ""
        return (f"{op.get_kind_display()}{target} failed; the details below say why. "
                "Retry once the cause is fixed.")

    def steps_undo(self, op: Operation, steps: list[dict]) -> list[dict]:
        """Give back recorded steps of a dead run; return those that could not be."""
        return steps

    def attention(self, op: Operation, left: list[str], state_note: str = "") -> None:
        """Record on the target that the operation stopped half-way and what is left."""

    def settle(self, op: Operation) -> str:
        """Put the target of a dead operation in the state it is really in; say it in words."""
        return ""

    def retry_refusal(self, op: Operation) -> str | None:
        """Return why a failed operation on the target may not be retried now, or None."""
        return None

    def tell_owner(self, op: Operation) -> None:
        """Tell the target's owner that an operation they asked for failed."""

    def reconcile(self) -> int:
        """Find targets left half-done with nothing under way; return how many were marked."""
        return 0


_TARGETS: dict[str, TargetHooks] = {}
_DEFAULT = TargetHooks()


def target_register(name: str, hooks: TargetHooks) -> None:
    """Register the hooks of a kind of target ("vm")."""
    _TARGETS[name] = hooks


def target_hooks(op: Operation) -> TargetHooks:
    """Return the hooks of the operation's target (a VM's when it has one)."""
    name = "vm" if op.vm_id else "host" if op.host_id else ""
    return _TARGETS.get(name, _DEFAULT)


def all_target_hooks() -> list[TargetHooks]:
    """Return every registered target's hooks."""
    return list(_TARGETS.values())


class HostHooks:
    """What the engine asks of the hosts application (how many are up, what a run told)."""

    def hosts_up(self) -> int:
        """Return how many hosts are up."""
        return 1

    def after_operation(self, host_id: int, *, succeeded: bool) -> None:
        """Note on the host whether an operation really reached it."""


HOST_HOOKS: list[HostHooks] = [HostHooks()]


def host_hooks_register(hooks: HostHooks) -> None:
    """Register the hosts application's hooks."""
    HOST_HOOKS[0] = hooks


def host_hooks() -> HostHooks:
    """Return the registered hosts hooks."""
    return HOST_HOOKS[0]


# Refusals every request passes, registered by the applications above (the VMs application
# refuses work on VMs while the cloud is shut down). Each is given the kind, the locked VM and
# host (or None) and the parent operation, and returns why the request is refused, or None.
RequestGuard = Callable[[str, object, object, "Operation | None"], "str | None"]
_REQUEST_GUARDS: list[RequestGuard] = []


def request_guard_register(guard: RequestGuard) -> None:
    """Ask this function about every operation requested or retried from now on."""
    if guard not in _REQUEST_GUARDS:
        _REQUEST_GUARDS.append(guard)


def request_refusal(kind: str, vm: object, host: object,
                    parent: Operation | None = None) -> str | None:
    """Return the first registered guard's refusal of this request, or None."""
    for guard in _REQUEST_GUARDS:
        refusal = guard(kind, vm, host, parent)
        if refusal:
            return refusal
    return None
