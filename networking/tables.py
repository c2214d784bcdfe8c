"""Tables of address pools."""

from __future__ import annotations

import django_tables2 as tables

from .models import PrivateIP, PublicIP

HOLDER = (
    '{% if record.vm %}<a href="{% url "vms:vm_detail" record.vm_id %}">{{ record.vm.name }}</a>'
    '{% elif record.host %}host {{ record.host.name }}{% else %}'
    '<span class="badge text-bg-light border">free</span>{% endif %}'
)


class _AddressTable(tables.Table):
    """What both pools' tables show: the address, who holds it and since when."""

    address = tables.Column(attrs={"td": {"class": "font-monospace"}})
    holder = tables.TemplateColumn(HOLDER, verbose_name="Held by", orderable=False)
    allocated_at = tables.DateTimeColumn(verbose_name="Since", format="Y-m-d H:i")

    class Meta:
        attrs = {"class": "table table-sm table-hover align-middle"}
        empty_text = "No address matches."


class PrivateIPTable(_AddressTable):
    """Private addresses and who holds them."""

    mac = tables.Column(verbose_name="MAC", attrs={"td": {"class": "font-monospace"}})

    class Meta(_AddressTable.Meta):
        model = PrivateIP
        fields = sequence = ("address", "mac", "holder", "allocated_at")


class PublicIPTable(_AddressTable):
    """Public addresses and the VM each forwards to."""

    mapping = tables.TemplateColumn(
        '{% if record.mapping %}<span class="font-monospace">{{ record.mapping.private_address }}'
        '</span>{% if not record.mapping.applied_at %} <span class="badge text-bg-warning">'
        'not applied</span>{% endif %}{% endif %}',
        verbose_name="NAT to", orderable=False,
    )

    class Meta(_AddressTable.Meta):
        model = PublicIP
        fields = sequence = ("address", "holder", "mapping", "allocated_at")
