"""Tables of requests, VMs and operations."""

from __future__ import annotations

import django_tables2 as tables
from django.utils.html import format_html

from operations.models import Operation

from .models import VirtualMachine, VMRequest

# The badge colour of each VM state; the same as templates/vms/_state_badge.html.
STATE_BADGES = {
    "running": "text-bg-success", "paused": "text-bg-info", "shutoff": "text-bg-secondary",
    "failed": "text-bg-danger", "crashed": "text-bg-danger", "deleted": "text-bg-light border",
}


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
    state = tables.Column(verbose_name="State")
    host = tables.Column(accessor="host__name", default="—", verbose_name="Host")
    ip = tables.Column(accessor="private_ip__address", verbose_name="IP", default="—",
                       orderable=False)
    sizes = tables.Column(accessor="vcpus", orderable=False, verbose_name="Size")

    # Cells are rendered in Python: a template per cell costs more than the query does.
    def render_state(self, record: VirtualMachine) -> str:
        """Show the state as a coloured badge."""
        badge = format_html('<span class="badge {}" data-state="{}">{}</span>',
                            STATE_BADGES.get(record.state, "text-bg-warning"), record.state,
                            record.get_state_display())
        if record.attention and record.state != "deleted":
            badge += format_html(' <span class="badge text-bg-danger" data-attention '
                                 'title="{}">Needs attention</span>', record.attention)
        return badge

    def render_sizes(self, record: VirtualMachine) -> str:
        """Show vCPUs, RAM and disk on one line."""
        return (f"{record.vcpus} vCPU{'' if record.vcpus == 1 else 's'} · "
                f"{record.memory_mib} MiB · {record.disk_gib} GiB")

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
    status = tables.TemplateColumn(
        '{% include "vms/_op_badge.html" with op=record %}'
        '{% with children=record.children_summary %}{% if children %}<div class="small '
        'text-body-secondary">Its operations: {{ children }}</div>{% endif %}{% endwith %}')
    message = tables.TemplateColumn(
        '<span class="small">{% include "vms/_op_message.html" with op=record short=True %}'
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
