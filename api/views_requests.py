"""VM requests and approvals, templates and security domains offered to the caller."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from core.views import require
from hosts.models import Template
from networking.services import security_domains_for
from vms.filters import VMRequestFilter
from vms.forms import DecisionForm, VMRequestForm
from vms.models import VMRequest
from vms.rules import is_requester
from vms.services.workflow import (
    vm_request_approve,
    vm_request_cancel,
    vm_request_create,
    vm_request_reject,
)

from . import serializers as s
from .pagination import ListFiltersOnly
from .schema import ERRORS, ERRORS_READ, form_checked

DONE = {200: s.VMRequestDetailSerializer, **ERRORS}


def _form_data(data: dict) -> dict:
    """Return the API's fields as the request form reads them."""
    out = {k: v for k, v in data.items() if k not in ("faculty", "ssh_keys")}
    out["faculty_username"] = data.get("faculty", "")
    out["ssh_keys"] = [str(pk) for pk in data.get("ssh_keys", [])]
    return out


class VMRequestViewSet(ListFiltersOnly, mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Requests: one's own, or every one the caller may see with `?scope=all`."""

    serializer_class = s.VMRequestSerializer
    filter_backends = [DjangoFilterBackend]
    filterset_class = VMRequestFilter
    lookup_value_regex = r"\d+"

    def get_queryset(self):  # noqa: ANN201 - a queryset of requests
        """Return the requests the caller sees, as the request list does."""
        return (VMRequest.objects.visible_to(self.request.user)
                .select_related("requester", "faculty", "vm").prefetch_related("steps__actor"))

    def get_serializer_class(self) -> type:
        """Show one request with its decisions."""
        return s.VMRequestDetailSerializer if self.action == "retrieve" else s.VMRequestSerializer

    @extend_schema(summary="Ask for a VM", request=s.VMRequestCreateSerializer,
                   responses={201: s.VMRequestDetailSerializer, **ERRORS})
    def create(self, request: Request, *args: object, **kwargs: object) -> Response:
        """Submit a request, checked as the request form checks it; answer 201."""
        given = s.VMRequestCreateSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        data = form_checked(VMRequestForm(_form_data(given.validated_data),
                                          requester=request.user),
                            rename={"faculty_username": "faculty"})
        made = vm_request_create(
            requester=request.user, name=data["name"], template=data["template"],
            vcpus=data["vcpus"], memory_mib=data["memory_mib"], disk_gib=data["disk_gib"],
            purpose=data["purpose"], faculty=data.get("faculty"),
            security_domain=data["security_domain"], public_ip=data["public_ip"],
            ssh_keys=list(data["ssh_keys"]), generate_password=data["generate_password"])
        body = s.VMRequestDetailSerializer(made, context={"request": request}).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": body["url"]})

    def _decide(self, request: Request, pk: int, approve: bool) -> Response:
        vm_request = get_object_or_404(VMRequest.objects.visible_to(request.user), pk=pk)
        # As on the page: stale and own requests reach the service, which says why (409).
        require(request.user.has_perm("vms.decide_request", vm_request)
                or not vm_request.is_pending or is_requester.test(request.user, vm_request))
        given = s.DecisionSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        seen = given.validated_data["seen_stage"] or vm_request.stage
        form = form_checked(DecisionForm({"reason": given.validated_data["reason"],
                                          "seen_stage": seen}))
        decide = vm_request_approve if approve else vm_request_reject
        done = decide(request=vm_request, actor=request.user, reason=form["reason"],
                      seen_stage=form["seen_stage"])
        return Response(s.VMRequestDetailSerializer(self.get_queryset().get(pk=done.pk),
                                                    context={"request": request}).data)

    @extend_schema(summary="Approve a request at its stage", request=s.DecisionSerializer,
                   responses=DONE)
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: int | None = None,
                version: str | None = None) -> Response:
        """Approve; the last approval creates the VM and queues its install."""
        return self._decide(request, pk, approve=True)

    @extend_schema(summary="Reject a request, with a reason", request=s.DecisionSerializer,
                   responses=DONE)
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk: int | None = None,
               version: str | None = None) -> Response:
        """Reject; the reason is required and shown to the requester."""
        return self._decide(request, pk, approve=False)

    @extend_schema(summary="Cancel one's own pending request", request=None, responses=DONE)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: int | None = None,
               version: str | None = None) -> Response:
        """Withdraw one's own pending request."""
        vm_request = get_object_or_404(VMRequest.objects.visible_to(request.user), pk=pk)
        require(request.user.has_perm("vms.cancel_request", vm_request)
                or not vm_request.is_pending)
        vm_request_cancel(request=vm_request, actor=request.user)
        return Response(s.VMRequestDetailSerializer(self.get_queryset().get(pk=pk),
                                                    context={"request": request}).data)


class ApprovalViewSet(viewsets.GenericViewSet, mixins.ListModelMixin):
    """The requests waiting for the caller's decision (never their own)."""

    serializer_class = s.VMRequestSerializer

    def get_queryset(self):  # noqa: ANN201 - a queryset of requests
        """Return the requests awaiting the caller, as the approvals page lists them."""
        return VMRequest.objects.awaiting(self.request.user).select_related(
            "requester", "faculty", "vm")

    @extend_schema(summary="Requests awaiting my decision",
                   responses={200: s.VMRequestSerializer(many=True), **ERRORS_READ})
    def list(self, request: Request, *args: object, **kwargs: object) -> Response:
        """List the requests awaiting the caller, newest first, by cursor pages."""
        return super().list(request, *args, **kwargs)


class TemplateViewSet(viewsets.ReadOnlyModelViewSet):
    """The templates a request may choose, with the sizes each allows."""

    serializer_class = s.TemplateSerializer
    pagination_class = None
    lookup_value_regex = r"\d+"

    def get_queryset(self):  # noqa: ANN201 - a queryset of templates
        """Return the active templates, as the request form offers them."""
        return Template.objects.filter(is_active=True).order_by("name")


class SecurityDomainViewSet(viewsets.ReadOnlyModelViewSet):
    """The security domains the caller's organisation may place VMs in."""

    serializer_class = s.SecurityDomainSerializer
    pagination_class = None
    lookup_value_regex = r"\d+"

    def get_queryset(self):  # noqa: ANN201 - a queryset of domains
        """Return the domains the request form offers the caller."""
        return security_domains_for(self.request.user).order_by("name")
