"""Models of the VMs application."""

from .machines import VirtualMachine, VMState
from .operations import (
    ACTIVE_STATUSES,
    AdminAlert,
    AlertDigest,
    Operation,
    OperationKind,
    OperationStatus,
)
from .requests import ApprovalStep, Decision, RequestKind, RequestStage, VMRequest
from .snapshots import (
    DiskState,
    ExtraDisk,
    Snapshot,
    SnapshotKind,
    SnapshotSchedule,
    SnapshotState,
)

__all__ = [
    "ACTIVE_STATUSES",
    "AdminAlert",
    "AlertDigest",
    "DiskState",
    "ExtraDisk",
    "Snapshot",
    "SnapshotKind",
    "SnapshotSchedule",
    "SnapshotState",
    "ApprovalStep",
    "Decision",
    "Operation",
    "OperationKind",
    "OperationStatus",
    "RequestKind",
    "RequestStage",
    "VMRequest",
    "VMState",
    "VirtualMachine",
]
