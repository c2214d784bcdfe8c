"""Tables of requests, VMs and operations."""

from __future__ import annotations

import django_tables2 as tables

from .models import Operation, VirtualMachine, VMRequest


class VMRequestTable(tables.Table):
    """Requests with their stage."""

    name = tables.Column(linkify=("vms:request_detail", {"pk": tables.A("pk")}))
    requester = tables.Column(accessor="requester__username", verbose_name="Requester")
    kind = tables.Column(verbose_name="Asks for")
    template = tables.Column(accessor="template__name", verbose_name="Template")
    sizes = tables.TemplateColumn(
        "{{ record.vcpus }} vCPU{{ record.vcpus|pluralize }} · {{ record.memory_mib }} MiB · "
        "{{ record.disk_gib }} GiB",
        orderable=False, verbose_name="Size",
    )
    stage = tables.TemplateColumn('{% include "vms/_stage_badge.html" with request=record %}')
    created_at = tables.DateTimeColumn(verbose_name="Submitted", format="Y-m-d H:i")

    class Meta:
        model = VMRequest
        fields = ("name", "kind", "requester", "template", "sizes", "stage", "created_at")
        attrs = {"class": "table table-hover align-middle"}
        empty_text = "No requests."


class VirtualMachineTable(tables.Table):
    """VMs with their state, host and address."""

    name = tables.Column(linkify=("vms:vm_detail", {"pk": tables.A("pk")}))
    owner = tables.Column(accessor="owner__username", verbose_name="Owner")
    state = tables.TemplateColumn('{% include "vms/_state_badge.html" with vm=record %}')
    host = tables.Column(accessor="host__name", default="—", verbose_name="Host")
    ip = tables.Column(accessor="private_ip__address", verbose_name="IP", default="—",
                       orderable=False)
    sizes = tables.TemplateColumn(
        "{{ record.vcpus }} vCPU{{ record.vcpus|pluralize }} · {{ record.memory_mib }} MiB · "
        "{{ record.disk_gib }} GiB",
        orderable=False, verbose_name="Size",
    )

    class Meta:
        model = VirtualMachine
        fields = ("name", "owner", "state", "host", "ip", "sizes")
        attrs = {"class": "table table-hover align-middle"}
        empty_text = "No VMs yet."


class OperationTable(tables.Table):
    """Operations with their outcome."""

    id = tables.Column(verbose_name="#")
    kind = tables.Column()
    target = tables.TemplateColumn(
        '{% if record.vm %}<a href="{% url "vms:vm_detail" record.vm_id %}">{{ record.vm.name }}'
        '</a>{% elif record.host %}{{ record.host.name }}{% endif %}',
        orderable=False,
    )
    status = tables.TemplateColumn('{% include "vms/_op_badge.html" with op=record %}')
    message = tables.TemplateColumn(
        '<span class="small">{{ record.message|default:record.progress|truncatechars:140 }}'
        '</span>', orderable=False,
    )
    requested_by = tables.Column(accessor="requested_by__username", default="system",
                                 verbose_name="Asked by")
    created_at = tables.DateTimeColumn(verbose_name="Queued", format="Y-m-d H:i:s")
    actions = tables.TemplateColumn(template_name="vms/_op_actions.html", orderable=False,
                                    verbose_name="")

    class Meta:
        model = Operation
        fields = ("id", "kind", "target", "status", "message", "requested_by", "created_at")
        attrs = {"class": "table table-sm table-hover align-middle"}
        empty_text = "No operations."
