"""The address pools' filters (django-filter), from the query string."""

from __future__ import annotations

import django_filters
from django import forms
from django.db.models import Q, QuerySet

from .models import PrivateIP


class AddressFilter(django_filters.FilterSet):
    """Private or public addresses, free or taken (`?state=`), by address, MAC or VM (`?q=`)."""

    state = django_filters.ChoiceFilter(choices=[("free", "Free"), ("taken", "Taken")],
                                        empty_label="All", method="filter_state")
    q = django_filters.CharFilter(method="filter_text", label="Search", widget=forms.TextInput(
        attrs={"placeholder": "Address, MAC or VM"}))

    def filter_state(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        """Keep the addresses nobody holds, or those a VM (or, for private ones, a host) holds."""
        private = queryset.model is PrivateIP
        if value == "free":
            queryset = queryset.filter(vm__isnull=True)
            return queryset.filter(host__isnull=True) if private else queryset
        return queryset.exclude(vm__isnull=True, **({"host__isnull": True} if private else {}))

    def filter_text(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        """Keep the addresses whose address, MAC (private ones) or VM's name contains the text."""
        value = value.strip()
        if not value:
            return queryset
        match = Q(address__icontains=value) | Q(vm__name__icontains=value)
        if queryset.model is PrivateIP:
            match |= Q(mac__icontains=value.lower())
        return queryset.filter(match)
