"""VMs, their actions, snapshots and disks, and operations: each through the services.

Every object is looked up among those the caller sees (`visible_to`) and acted on only with
the permission the page asks (`user.has_perm`); anything else answers 404, as on the pages.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.response import Response

from core.views import require
from operations.models import Operation, OperationKind
from vms.filters import OperationFilter, VirtualMachineFilter
from vms.forms import SnapshotForm
from vms.models import Snapshot, VirtualMachine
from vms.services.lifecycle import vm_action_request
from vms.services.snapshots import snapshot_delete, snapshot_revert, snapshot_take

from . import serializers as s
from .pagination import ListFiltersOnly
from .schema import ERRORS, ERRORS_READ, form_checked

ACCEPTED = {202: s.OperationAcceptedSerializer, **ERRORS}


def accepted(request: Request, op: Operation) -> Response:
    """Answer 202 with the operation just queued; its URL (also `Location`) is to poll."""
    data = s.OperationSerializer(op, context={"request": request}).data
    return Response({"operation": data}, status=status.HTTP_202_ACCEPTED,
                    headers={"Location": data["url"]})


def operable_vm(request: Request, pk: int) -> VirtualMachine:
    """Return the VM the caller sees and may operate, else 404."""
    vm = get_object_or_404(VirtualMachine.objects.visible_to(request.user), pk=pk)
    require(request.user.has_perm("vms.operate_vm", vm))
    return vm


def _power(kind: OperationKind, summary: str, path: str = ""):  # noqa: ANN202 - an action
    def act(self: VMViewSet, request: Request, pk: int | None = None,
            version: str | None = None) -> Response:
        vm = operable_vm(request, pk)
        return accepted(request, vm_action_request(vm=vm, kind=kind, actor=request.user))
    act.__name__ = act.__qualname__ = path.replace("-", "_") or kind.value
    act.__doc__ = f"{summary}: queue the operation and answer 202 with its URL."
    routed = action(detail=True, methods=["post"], url_path=path or kind.value,
                    url_name=path or kind.value)(act)
    return extend_schema(summary=summary, request=None, responses=ACCEPTED)(routed)


class VMViewSet(ListFiltersOnly, viewsets.ReadOnlyModelViewSet):
    """The VMs the caller sees; `?deleted=1` includes deleted ones, as on the VM list."""

    serializer_class = s.VirtualMachineSerializer
    filter_backends = [DjangoFilterBackend]
    filterset_class = VirtualMachineFilter
    lookup_value_regex = r"\d+"

    def get_queryset(self):  # noqa: ANN201 - a queryset of VMs
        """Return the VMs the caller sees, with what a page of them shows, in fixed queries."""
        return (VirtualMachine.objects.visible_to(self.request.user)
                .select_related("owner", "host").prefetch_related("private_ips"))

    def get_serializer_class(self) -> type:
        """Show more of one VM than of a list."""
        if self.action == "retrieve":
            return s.VirtualMachineDetailSerializer
        return s.VirtualMachineSerializer

    @extend_schema(summary="Show a VM",
                   responses={200: s.VirtualMachineDetailSerializer, **ERRORS_READ})
    def retrieve(self, request: Request, *args: object, **kwargs: object) -> Response:
        """Show a VM with its state, host, addresses, access lines and recent operations."""
        return super().retrieve(request, *args, **kwargs)

    @extend_schema(summary="Delete a VM", request=None, responses=ACCEPTED)
    def destroy(self, request: Request, pk: int | None = None,
                version: str | None = None) -> Response:
        """Queue the VM's deletion (its disk and addresses are given back); answer 202."""
        vm = operable_vm(request, pk)
        op = vm_action_request(vm=vm, kind=OperationKind.DELETE, actor=request.user)
        return accepted(request, op)

    start = _power(OperationKind.START, "Start")
    shutdown = _power(OperationKind.SHUTDOWN, "Shut down (ACPI)")
    force_off = _power(OperationKind.DESTROY, "Force off", "force-off")
    reboot = _power(OperationKind.REBOOT, "Reboot")
    suspend = _power(OperationKind.SUSPEND, "Suspend")
    resume = _power(OperationKind.RESUME, "Resume")


class OnOneVM:
    """A view set under /vms/<vm_pk>/: the VM is found first, as its page would find it.

    Whoever sees the VM reads (a 404 for anyone else); only its operators change anything.
    """

    vm: VirtualMachine

    def initial(self, request: Request, *args: object, **kwargs: object) -> None:
        """Find the VM before the handler runs, once authentication has passed."""
        super().initial(request, *args, **kwargs)
        if request.method not in self.allowed_methods:
            return  # 405 from the handler, before any lookup
        if request.method in SAFE_METHODS:
            self.vm = get_object_or_404(VirtualMachine.objects.visible_to(request.user),
                                        pk=kwargs["vm_pk"])
        else:
            self.vm = operable_vm(request, kwargs["vm_pk"])


class SnapshotViewSet(OnOneVM, viewsets.GenericViewSet):
    """The snapshots of one VM: listed to whoever sees it; taken, reverted, deleted by operators."""

    serializer_class = s.SnapshotSerializer
    pagination_class = None
    lookup_value_regex = r"\d+"

    def get_queryset(self):  # noqa: ANN201 - a queryset of snapshots
        """Return the VM's snapshots (the VM checked first)."""
        return Snapshot.objects.filter(vm=self.vm)

    @extend_schema(summary="List a VM's snapshots",
                   responses={200: s.SnapshotSerializer(many=True), **ERRORS_READ})
    def list(self, request: Request, *args: object, **kwargs: object) -> Response:
        """List the VM's snapshots, newest first."""
        return Response(self.get_serializer(self.get_queryset(), many=True).data)

    @extend_schema(summary="Take a snapshot", request=s.SnapshotCreateSerializer,
                   responses=ACCEPTED)
    def create(self, request: Request, *args: object, **kwargs: object) -> Response:
        """Queue a snapshot of the VM; answer 202 with the operation."""
        data = s.SnapshotCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        cleaned = form_checked(SnapshotForm(data.validated_data))
        snapshot_take(vm=self.vm, actor=request.user, name=cleaned["name"],
                      description=cleaned["description"])
        op = self.vm.operations.filter(kind=OperationKind.SNAPSHOT_CREATE).order_by("-pk").first()
        return accepted(request, op)

    @extend_schema(summary="Delete a snapshot", request=None, responses=ACCEPTED)
    def destroy(self, request: Request, *args: object, **kwargs: object) -> Response:
        """Queue the snapshot's deletion; answer 202 with the operation."""
        return accepted(request, snapshot_delete(snapshot=self.get_object(), actor=request.user))

    @extend_schema(summary="Revert to a snapshot", request=None, responses=ACCEPTED)
    @action(detail=True, methods=["post"])
    def revert(self, request: Request, *args: object, **kwargs: object) -> Response:
        """Queue the VM's return to the snapshot; answer 202 with the operation."""
        return accepted(request, snapshot_revert(snapshot=self.get_object(), actor=request.user))


class OperationViewSet(ListFiltersOnly, viewsets.ReadOnlyModelViewSet):
    """Operations the caller sees (`?status=`, `?attention=1`), with their progress."""

    serializer_class = s.OperationSerializer
    filter_backends = [DjangoFilterBackend]
    filterset_class = OperationFilter
    lookup_value_regex = r"\d+"

    def get_queryset(self):  # noqa: ANN201 - a queryset of operations
        """Return the operations the caller sees, with their children's progress in one query."""
        return (Operation.objects.visible_to(self.request.user)
                .select_related("requested_by").prefetch_related("children"))


