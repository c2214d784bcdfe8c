"""List filters of requests, VMs and operations (django-filter), from the query string."""

from __future__ import annotations

import django_filters
from django.db.models import QuerySet

from operations.models import Operation, OperationStatus

from .models import VirtualMachine, VMRequest, VMState


class VMRequestFilter(django_filters.FilterSet):
    """Requests: the user's own, or every one they may see with `?scope=all`."""

    scope = django_filters.ChoiceFilter(choices=[("all", "All I can see")],
                                        method="filter_nothing")

    class Meta:
        model = VMRequest
        fields: list[str] = []

    @property
    def mine(self) -> bool:
        """Return whether the list shows only the user's own requests."""
        return self.form.cleaned_data.get("scope") != "all"

    def filter_nothing(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        """Leave the queryset as it is: the scope is applied by `filter_queryset`."""
        return queryset

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        """Apply the filters, and keep the user's own requests unless all were asked for."""
        queryset = super().filter_queryset(queryset)
        return queryset.filter(requester_id=self.request.user.pk) if self.mine else queryset


class VirtualMachineFilter(django_filters.FilterSet):
    """VMs: deleted ones only with `?deleted=1`."""

    deleted = django_filters.ChoiceFilter(choices=[("1", "Show deleted")],
                                          method="filter_nothing")

    class Meta:
        model = VirtualMachine
        fields: list[str] = []

    @property
    def show_deleted(self) -> bool:
        """Return whether deleted VMs are listed too."""
        return self.form.cleaned_data.get("deleted") == "1"

    def filter_nothing(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        """Leave the queryset as it is: deleted VMs are left out by `filter_queryset`."""
        return queryset

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        """Apply the filters, and leave deleted VMs out unless they were asked for."""
        queryset = super().filter_queryset(queryset)
        return queryset if self.show_deleted else queryset.exclude(state=VMState.DELETED)


class OperationFilter(django_filters.FilterSet):
    """Operations by status (`?status=failed`), or those needing attention (`?attention=1`)."""

    status = django_filters.ChoiceFilter(choices=OperationStatus.choices,
                                         empty_label="Any status")
    attention = django_filters.ChoiceFilter(choices=[("1", "Needs attention")],
                                            method="filter_attention")

    class Meta:
        model = Operation
        fields: list[str] = []

    def filter_attention(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        """Keep the failed operations nobody has dismissed."""
        return queryset.filter(status=OperationStatus.FAILED, dismissed=False)
