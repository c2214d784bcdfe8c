"""The host list's filters (django-filter), from the query string."""

from __future__ import annotations

import django_filters
from django import forms
from django.db.models import Q, QuerySet

from .models import Host, HostStatus


class HostFilter(django_filters.FilterSet):
    """Hosts by status (`?status=`) and by name or URI (`?q=`)."""

    status = django_filters.ChoiceFilter(choices=HostStatus.choices, empty_label="Any status")
    q = django_filters.CharFilter(method="filter_text", label="Search", widget=forms.TextInput(
        attrs={"placeholder": "Name or URI"}))

    class Meta:
        model = Host
        fields: list[str] = []

    def filter_text(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        """Keep the hosts whose name or libvirt URI contains the text."""
        value = value.strip()
        return queryset.filter(Q(name__icontains=value) | Q(uri__icontains=value)) if value \
            else queryset
