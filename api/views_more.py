"""Extra disks, change requests and usage of a VM; hosts, pools and addresses for admins."""

from __future__ import annotations

from django.db.models import Count, Q
from django.shortcuts import get_object_or_404
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from core.views import require
from hosts.models import Host
from monitoring.charts import METRIC_LABELS
from monitoring.collector import host_key, rrd_store, vm_key
from monitoring.rrd import METRICS, PERIODS
from networking.filters import AddressFilter
from networking.models import VLAN, PrivateIP, PublicIP
from operations.models import OperationKind
from vms.forms import VMChangeForm
from vms.models import RequestKind
from vms.models.snapshots import ExtraDisk
from vms.services.changes import disk_action_request
from vms.services.workflow import vm_change_request_create

from . import serializers as s
from . import serializers_more as m
from .pagination import ListFiltersOnly
from .schema import ERRORS, ERRORS_READ, form_checked
from .views_vms import ACCEPTED, OnOneVM, accepted, operable_vm

PERIOD = OpenApiParameter("period", str, enum=list(PERIODS), default="day",
                          description="The period the series covers, ending now.")


def usage_series(kind: str, key: str, period: str) -> dict:
    """Return each metric's points over the period, with its mean and last known value."""
    store = rrd_store()
    series = store.fetch(kind, key, period)
    latest = store.latest(kind, key)
    metrics = {}
    for metric in METRICS:
        values = series.column(metric) if series.rows else []
        known = [v for v in values if v is not None]
        label, unit = METRIC_LABELS[metric]
        metrics[metric] = {"label": label, "unit": unit,
                           "average": sum(known) / len(known) if known else None,
                           "latest": latest.get(metric),
                           "points": [[t, v] for t, v in zip(series.times, values, strict=False)]}
    return {"period": period, "start": series.start, "end": series.end, "step": series.step,
            "metrics": metrics}


def _period(request: Request) -> str:
    period = request.query_params.get("period", "day")
    if period not in PERIODS:
        raise ValidationError({"period": [f"Choose one of {', '.join(PERIODS)}."]})
    return period


class VMExtrasViewSet(OnOneVM, viewsets.GenericViewSet):
    """A VM's extra disks, change requests and usage."""

    serializer_class = m.ChangeRequestCreateSerializer
    pagination_class = None

    @extend_schema(summary="List a VM's extra disks",
                   responses={200: s.DiskSerializer(many=True), **ERRORS_READ})
    @action(detail=False, methods=["get"])
    def disks(self, request: Request, *args: object, **kwargs: object) -> Response:
        """List the VM's extra disks (add one with a change request of kind disk)."""
        return Response(s.DiskSerializer(self.vm.extra_disks.all(), many=True).data)

    @extend_schema(summary="Ask for a change to a VM", request=m.ChangeRequestCreateSerializer,
                   responses={201: s.VMRequestDetailSerializer, **ERRORS})
    @action(detail=False, methods=["post"])
    def changes(self, request: Request, *args: object, **kwargs: object) -> Response:
        """Submit a resize, disk, clone, network, public IP or SSH port change; answer 201."""
        given = m.ChangeRequestCreateSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        data = dict(given.validated_data)
        kind = RequestKind(data.pop("kind"))
        form = VMChangeForm({k: v for k, v in data.items() if k != "faculty"}
                            | {"faculty": _faculty_pk(request, data.get("faculty"))},
                            requester=request.user, vm=self.vm, kind=kind)
        cleaned = form_checked(form)
        made = vm_change_request_create(
            requester=request.user, vm=self.vm, kind=kind, purpose=cleaned["purpose"],
            security_domain=cleaned.get("security_domain"), faculty=cleaned.get("faculty"),
            params={k: cleaned[k] for k in ("vcpus", "memory_mib", "size_gib", "count")
                    if k in cleaned})
        body = s.VMRequestDetailSerializer(made, context={"request": request}).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": body["url"]})

    @extend_schema(summary="A VM's usage series", parameters=[PERIOD],
                   responses={200: m.UsageSerializer, **ERRORS_READ})
    @action(detail=False, methods=["get"])
    def usage(self, request: Request, *args: object, **kwargs: object) -> Response:
        """Return each metric's series over the period, with its average and latest value."""
        return Response(usage_series("vm", vm_key(self.vm), _period(request)))


def _faculty_pk(request: Request, username: str | None) -> str:
    from vms.selectors import faculty_choices

    if not username:
        return ""
    found = faculty_choices(requester=request.user).filter(username=username).first()
    return str(found.pk) if found else "0"  # an unknown faculty: the form says so


class DiskViewSet(mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Detach or delete one of a VM's extra disks."""

    serializer_class = s.DiskSerializer
    lookup_value_regex = r"\d+"

    def get_queryset(self):  # noqa: ANN201 - a queryset of disks
        """Return the disks of the VM the caller operates."""
        return ExtraDisk.objects.filter(vm=self.vm)

    def initial(self, request: Request, *args: object, **kwargs: object) -> None:
        """Find the VM the caller operates first; another's answers 404."""
        super().initial(request, *args, **kwargs)
        if request.method not in self.allowed_methods:
            return  # 405 from the handler, before any lookup
        self.vm = operable_vm(request, kwargs["vm_pk"])

    @extend_schema(summary="Delete an extra disk", request=None, responses=ACCEPTED)
    def destroy(self, request: Request, *args: object, **kwargs: object) -> Response:
        """Queue the disk's deletion (its data is lost); answer 202."""
        return accepted(request, disk_action_request(
            disk=self.get_object(), kind=OperationKind.DISK_DELETE, actor=request.user))

    @extend_schema(summary="Detach an extra disk", request=None, responses=ACCEPTED)
    @action(detail=True, methods=["post"])
    def detach(self, request: Request, *args: object, **kwargs: object) -> Response:
        """Queue the disk's detaching (it is kept); answer 202."""
        return accepted(request, disk_action_request(
            disk=self.get_object(), kind=OperationKind.DISK_DETACH, actor=request.user))


class AdminOnly:
    """Answer 404 to anyone but admins, as the admin pages do."""

    permission_name = "hosts.view_host"

    def initial(self, request: Request, *args: object, **kwargs: object) -> None:
        """Refuse before anything is looked up."""
        super().initial(request, *args, **kwargs)
        if request.method not in self.allowed_methods:
            return  # 405 from the handler, before any lookup
        require(request.user.has_perm(self.permission_name))


class HostViewSet(AdminOnly, viewsets.ReadOnlyModelViewSet):
    """Hosts with their status (admins)."""

    serializer_class = m.HostSerializer
    lookup_value_regex = r"\d+"

    def get_queryset(self):  # noqa: ANN201 - a queryset of hosts
        """Return the hosts the caller sees."""
        return Host.objects.visible_to(self.request.user)

    @extend_schema(summary="A host's usage series", parameters=[PERIOD],
                   responses={200: m.UsageSerializer, **ERRORS_READ})
    @action(detail=True, methods=["get"])
    def usage(self, request: Request, *args: object, **kwargs: object) -> Response:
        """Return each metric's series over the period, with its average and latest value."""
        return Response(usage_series("host", host_key(self.get_object()), _period(request)))


class VLANViewSet(AdminOnly, viewsets.ReadOnlyModelViewSet):
    """Private address pools with their use (admins)."""

    permission_name = "networking.manage_pools"
    serializer_class = m.VLANSerializer
    lookup_value_regex = r"\d+"

    def get_queryset(self):  # noqa: ANN201 - a queryset of VLANs
        """Return the VLANs with their address counts, as the network page shows them."""
        return VLAN.objects.annotate(
            total=Count("addresses"),
            taken=Count("addresses", filter=Q(addresses__vm__isnull=False)
                        | Q(addresses__host__isnull=False)))


class AddressViewSet(AdminOnly, ListFiltersOnly, viewsets.ReadOnlyModelViewSet):
    """A VLAN's private addresses (`?state=free|taken`, `?q=`), as on its page (admins)."""

    permission_name = "networking.manage_pools"
    serializer_class = m.PrivateIPSerializer
    filter_backends = [DjangoFilterBackend]
    filterset_class = AddressFilter
    lookup_value_regex = r"\d+"

    def get_queryset(self):  # noqa: ANN201 - a queryset of addresses
        """Return the VLAN's addresses with their holders."""
        if getattr(self, "swagger_fake_view", False):  # the schema's look at the view
            return PrivateIP.objects.none()
        vlan = get_object_or_404(VLAN, pk=self.kwargs["vlan_pk"])
        return PrivateIP.objects.filter(vlan=vlan).select_related("vm", "host")


class PublicIPViewSet(AdminOnly, ListFiltersOnly, viewsets.ReadOnlyModelViewSet):
    """The public address pool (`?state=free|taken`, `?q=`) (admins)."""

    permission_name = "networking.manage_pools"
    serializer_class = m.PublicIPSerializer
    filter_backends = [DjangoFilterBackend]
    filterset_class = AddressFilter
    lookup_value_regex = r"\d+"

    def get_queryset(self):  # noqa: ANN201 - a queryset of addresses
        """Return the public addresses with their VMs."""
        return PublicIP.objects.select_related("vm")
