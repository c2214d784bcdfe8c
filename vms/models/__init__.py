"""Models of the VMs application."""

from .machines import VirtualMachine, VMState
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
    "DiskState",
    "ExtraDisk",
    "Snapshot",
    "SnapshotKind",
    "SnapshotSchedule",
    "SnapshotState",
    "ApprovalStep",
    "Decision",
    "RequestKind",
    "RequestStage",
    "VMRequest",
    "VMState",
    "VirtualMachine",
]
