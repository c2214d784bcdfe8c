"""Table of people."""

from __future__ import annotations

import django_tables2 as tables

from .models import User


class PeopleTable(tables.Table):
    """People with their role and its source."""

    username = tables.Column(linkify=("accounts:person_detail", {"pk": tables.A("pk")}),
                             verbose_name="Username")
    name = tables.TemplateColumn("{{ record.get_full_name }}", verbose_name="Name",
                                 order_by=("last_name", "first_name"))
    organisation = tables.Column(accessor="organisation__name", verbose_name="Organisation",
                                 default="—")
    role = tables.Column(verbose_name="Role")
    source = tables.TemplateColumn(
        '{% if record.role_source == "portal" %}<span class="badge text-bg-info">given in the '
        'portal</span>{% elif record.role_source == "directory" %}<span class="badge '
        'text-bg-secondary">directory</span>{% else %}<span class="badge text-bg-light border">'
        'local account</span>{% endif %}', verbose_name="Role from", orderable=False)
    is_active = tables.BooleanColumn(verbose_name="May log in")

    class Meta:
        model = User
        fields = ("username", "name", "email", "organisation", "role", "source", "is_active")
        attrs = {"class": "table table-hover align-middle", "id": "people"}
        empty_text = "Nobody matches."
