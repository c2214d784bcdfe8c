"""Models of the VMs application."""

from .cloud import (
    CloudHostStage,
    CloudShutdown,
    CloudShutdownHost,
    CloudShutdownVM,
    CloudVMStage,
)
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
    "CloudHostStage",
    "CloudShutdown",
    "CloudShutdownHost",
    "CloudShutdownVM",
    "CloudVMStage",
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
