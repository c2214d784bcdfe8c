"""Models of the VMs application."""

from .machines import VirtualMachine, VMState
from .operations import Operation, OperationKind, OperationStatus
from .requests import ApprovalStep, Decision, RequestKind, RequestStage, VMRequest

__all__ = [
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
