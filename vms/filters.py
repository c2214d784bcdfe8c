"""List filters of requests, VMs and operations (django-filter), from the query string."""

from __future__ import annotations

from collections.abc import Callable

import django_filters
from django.db.models import QuerySet

from operations.models import Operation, OperationStatus

from .models import VMState


class WideningFilterSet(django_filters.FilterSet):
    """A list narrowed by default (`narrow`) unless the filter `widen_by` names is chosen."""

    widen_by = ""

    def widened(self) -> bool:
        """Return whether the query string asked for the wider list."""
        return bool(self.form.cleaned_data.get(self.widen_by))

    def narrow(self, queryset: QuerySet) -> QuerySet:
        """Return the default, narrower list."""
        raise NotImplementedError

    def filter_nothing(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        """Leave the queryset as it is: `filter_queryset` applies the choice."""
        return queryset

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        """Apply the filters, and narrow the list unless the wider one was asked for."""
        queryset = super().filter_queryset(queryset)
        return queryset if self.widened() else self.narrow(queryset)


def widening_filterset(name: str, *, param: str, value: str, label: str,
                       narrow: Callable[[WideningFilterSet, QuerySet], QuerySet],
                       ) -> type[WideningFilterSet]:
    """Return a FilterSet whose list `narrow` narrows unless the query string has `param=value`."""
    choice = django_filters.ChoiceFilter(choices=[(value, label)], method="filter_nothing")
    return type(name, (WideningFilterSet,), {
        param: choice, "widen_by": param, "narrow": narrow,
        "__doc__": f"{name}: narrowed unless ?{param}={value} ({label.lower()}).",
        "__module__": __name__})


# Requests: the user's own, or every one they may see with `?scope=all`.
VMRequestFilter = widening_filterset(
    "VMRequestFilter", param="scope", value="all", label="All I can see",
    narrow=lambda filters, qs: qs.filter(requester_id=filters.request.user.pk))
# VMs: deleted ones only with `?deleted=1`.
VirtualMachineFilter = widening_filterset(
    "VirtualMachineFilter", param="deleted", value="1", label="Show deleted",
    narrow=lambda filters, qs: qs.exclude(state=VMState.DELETED))


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
        """Keep the failed operations nobody has dismissed, leaving out routine ones."""
        return queryset.needing_attention()
