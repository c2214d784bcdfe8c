"""The admin's overview of hosts: load, free capacity and VMs, sortable."""

from __future__ import annotations

import django_tables2 as tables


def _free_of(free: str, capacity: str, unit: str, label: str) -> tables.TemplateColumn:
    """A column of what is free of a capacity: '3 MiB of 8'."""
    return tables.TemplateColumn(
        f'{{{{ record.{free} }}}}{unit} <span class="small text-body-secondary">of '
        f'{{{{ record.{capacity} }}}}</span>', verbose_name=label)


class HostOverviewTable(tables.Table):
    """One row per host; sorting happens on the computed figures."""

    name = tables.TemplateColumn(
        '<a href="{% url "hosts:host_detail" record.pk %}">{{ record.name }}</a>'
        '<div class="small text-body-secondary font-monospace">{{ record.uri }}</div>',
        verbose_name="Host")
    status = tables.TemplateColumn(
        '<span class="badge {% if record.status == "up" %}text-bg-success{% elif '
        'record.status == "down" %}text-bg-danger{% else %}text-bg-warning{% endif %}">'
        '{{ record.status_label }}</span>{% if record.last_error %} <i class="bi '
        'bi-exclamation-triangle text-danger" title="{{ record.last_error }}"></i>{% endif %}'
        ' {% include "hosts/_health_badge.html" with state=record.health %}',
        verbose_name="Status")
    accel = tables.Column(verbose_name="Acceleration")
    vm_count = tables.Column(verbose_name="VMs")
    cpu_load = tables.TemplateColumn(
        '{% if record.cpu_load is None %}—{% else %}{{ record.cpu_load|floatformat:1 }} %'
        '{% endif %}', verbose_name="CPU load")
    vcpus_free = _free_of("vcpus_free", "vcpu_capacity", "", "vCPUs free")
    memory_free = _free_of("memory_free", "memory_capacity", " MiB", "RAM free")
    last_seen = tables.TemplateColumn(
        '{% load humanize %}{% if record.last_seen %}{{ record.last_seen|naturaltime }}'
        '{% else %}never{% endif %}', verbose_name="Last seen")

    class Meta:
        attrs = {"class": "table table-hover align-middle", "id": "host-overview"}
        empty_text = "No host yet."
        order_by = "name"
