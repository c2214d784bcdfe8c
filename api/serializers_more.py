"""What the API answers about disks, change requests, usage, and (admins) hosts and pools."""

from __future__ import annotations

from rest_framework import serializers

from hosts.models import Host
from networking.models import VLAN, PrivateIP, PublicIP
from vms.models import RequestKind

CHANGE_KINDS = [RequestKind.RESIZE, RequestKind.DISK, RequestKind.CLONE, RequestKind.NETWORK,
                RequestKind.PUBLIC_IP, RequestKind.SSH_PORT]
INT = {"min_value": 1, "max_value": 2**31 - 1}


class ChangeRequestCreateSerializer(serializers.Serializer):
    """A change to a VM, asked of the same approvers as a new one (checked as its form is)."""

    kind = serializers.ChoiceField(choices=[(k.value, k.label) for k in CHANGE_KINDS])
    purpose = serializers.CharField(max_length=2000, allow_blank=True,
                                    help_text="Why the change is needed.")
    vcpus = serializers.IntegerField(required=False, help_text="resize", **INT)
    memory_mib = serializers.IntegerField(required=False, help_text="resize", **INT)
    size_gib = serializers.IntegerField(required=False, help_text="disk: the new disk's size",
                                        **INT)
    count = serializers.IntegerField(required=False, help_text="clone: how many copies", **INT)
    security_domain = serializers.IntegerField(required=False, help_text="network: move to",
                                               **INT)
    faculty = serializers.CharField(required=False, allow_blank=True, max_length=150,
                                    help_text="Username of the approving faculty (students).")


class UsageMetricSerializer(serializers.Serializer):
    """One metric over the period: its unit, mean, last value and the points."""

    label = serializers.CharField()
    unit = serializers.CharField()
    average = serializers.FloatField(allow_null=True)
    latest = serializers.FloatField(allow_null=True)
    points = serializers.ListField(child=serializers.ListField(
        child=serializers.FloatField(allow_null=True), min_length=2, max_length=2),
        help_text="[unix time, value or null] per row.")


class UsageSerializer(serializers.Serializer):
    """A VM's or host's usage series for a period."""

    period = serializers.ChoiceField(choices=["hour", "day", "week", "month", "year"])
    start = serializers.IntegerField()
    end = serializers.IntegerField()
    step = serializers.IntegerField()
    metrics = serializers.DictField(child=UsageMetricSerializer())


class HostSerializer(serializers.ModelSerializer):
    """A host as admins see it on the hosts page."""

    class Meta:
        model = Host
        fields = ("id", "name", "uri", "status", "vcpus", "memory_mib", "accel", "cpu_mode",
                  "last_seen_at", "last_error", "health_failures", "down_reason")
        read_only_fields = fields


class VLANSerializer(serializers.ModelSerializer):
    """A private address pool: a VLAN with its counts."""

    total = serializers.IntegerField()
    taken = serializers.IntegerField()

    class Meta:
        model = VLAN
        fields = ("id", "name", "tag", "subnet", "gateway", "network_name", "total", "taken")
        read_only_fields = fields


class PrivateIPSerializer(serializers.ModelSerializer):
    """A private address with who holds it."""

    vm = serializers.CharField(source="vm.name", allow_null=True, default=None)
    host = serializers.CharField(source="host.name", allow_null=True, default=None)

    class Meta:
        model = PrivateIP
        fields = ("id", "address", "mac", "vlan_id", "vm_id", "vm", "host", "allocated_at")
        read_only_fields = fields


class PublicIPSerializer(serializers.ModelSerializer):
    """A public address with the VM it is mapped to."""

    vm = serializers.CharField(source="vm.name", allow_null=True, default=None)

    class Meta:
        model = PublicIP
        fields = ("id", "address", "vm_id", "vm", "allocated_at")
        read_only_fields = fields
