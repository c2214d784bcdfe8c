"""The people list's filters (django-filter), from the query string."""

from __future__ import annotations

import django_filters
from django import forms
from django.db.models import Q, QuerySet

from .models import Role, User


class PeopleFilter(django_filters.FilterSet):
    """People by name, username or e-mail (`?q=`) and by role (`?role=`)."""

    q = django_filters.CharFilter(method="filter_text", label="Search", widget=forms.TextInput(
        attrs={"placeholder": "Name, username or e-mail"}))
    role = django_filters.ChoiceFilter(choices=Role.choices, empty_label="Any role")

    class Meta:
        model = User
        fields: list[str] = []

    def filter_text(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        """Keep the people whose username, names or e-mail contain the text."""
        value = value.strip()
        if not value:
            return queryset
        return queryset.filter(Q(username__icontains=value) | Q(first_name__icontains=value)
                               | Q(last_name__icontains=value) | Q(email__icontains=value))
