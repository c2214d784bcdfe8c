"""Tables of address pools."""

from __future__ import annotations

import django_tables2 as tables

from .models import PrivateIP, PublicIP

HOLDER = (
    '{% if record.vm %}<a href="{% url "vms:vm_detail" record.vm_id %}">{{ record.vm.name }}</a>'
    '{% elif record.host %}host {{ record.host.name }}{% else %}'
    '<span class="badge text-bg-light border">free</span>{% endif %}'
)


class PrivateIPTable(tables.Table):
    """Private addresses and who holds them."""

    address = tables.Column(attrs={"td": {"class": "font-monospace"}})
    mac = tables.Column(verbose_name="MAC", attrs={"td": {"class": "font-monospace"}})
    holder = tables.TemplateColumn(HOLDER, verbose_name="Held by", orderable=False)
    allocated_at = tables.DateTimeColumn(verbose_name="Since", format="Y-m-d H:i")

    class Meta:
        model = PrivateIP
        fields = ("address", "mac", "holder", "allocated_at")
        attrs = {"class": "table table-sm table-hover align-middle"}
        empty_text = "No address matches."


class PublicIPTable(tables.Table):
    """Public addresses and the VM each forwards to."""

    address = tables.Column(attrs={"td": {"class": "font-monospace"}})
    holder = tables.TemplateColumn(HOLDER, verbose_name="Held by", orderable=False)
    mapping = tables.TemplateColumn(
        '{% if record.mapping %}<span class="font-monospace">{{ record.mapping.private_address }}'
        '</span>{% if not record.mapping.applied_at %} <span class="badge text-bg-warning">'
        'not applied</span>{% endif %}{% endif %}',
        verbose_name="NAT to", orderable=False,
    )
    allocated_at = tables.DateTimeColumn(verbose_name="Since", format="Y-m-d H:i")

    class Meta:
        model = PublicIP
        fields = ("address", "holder", "mapping", "allocated_at")
        attrs = {"class": "table table-sm table-hover align-middle"}
        empty_text = "No address matches."
