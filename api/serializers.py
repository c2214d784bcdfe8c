"""What the API answers with: read-only views of the portal's objects, and action inputs."""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from hosts.models import Template
from networking.models import SecurityDomain
from operations.models import Operation
from vms.models import Snapshot, VirtualMachine, VMRequest
from vms.models.snapshots import ExtraDisk


def api_url(name: str, pk: int) -> str:
    """Return the API path of one object (`api:<name>`)."""
    return reverse(f"api:{name}", kwargs={"version": "v1", "pk": pk})


class AddressSerializer(serializers.Serializer):
    """One private address of a VM."""

    address = serializers.IPAddressField(protocol="IPv4")
    mac = serializers.CharField()
    vlan_id = serializers.IntegerField()


class VirtualMachineSerializer(serializers.ModelSerializer):
    """A VM as its list shows it."""

    url = serializers.SerializerMethodField()
    owner = serializers.CharField(source="owner.username")
    host = serializers.CharField(source="host.name", allow_null=True, default=None)
    addresses = serializers.SerializerMethodField()

    class Meta:
        model = VirtualMachine
        fields = ("id", "url", "name", "state", "owner", "organisation_id", "host", "template_id",
                  "security_domain_id", "vcpus", "memory_mib", "disk_gib", "addresses",
                  "attention", "created_at", "deleted_at")
        read_only_fields = fields

    def get_url(self, vm: VirtualMachine) -> str:
        """Return the VM's API path."""
        return api_url("vm-detail", vm.pk)

    @extend_schema_field(AddressSerializer(many=True))
    def get_addresses(self, vm: VirtualMachine) -> list[dict]:
        """Return the VM's private addresses with their MACs, from the prefetched rows."""
        return [{"address": ip.address, "mac": ip.mac, "vlan_id": ip.vlan_id}
                for ip in vm.private_ips.all()]


class AccessSerializer(serializers.Serializer):
    """How to reach a VM: SSH commands and the browser consoles."""

    ssh_user = serializers.CharField()
    ssh_inside = serializers.CharField(help_text="From a machine on the VM's network; '' without "
                                                 "an address.")
    ssh_outside = serializers.CharField(help_text="Through the public IP or forwarded port, "
                                                  "or ''.")
    public_ip = serializers.IPAddressField(allow_null=True)
    ssh_port = serializers.IntegerField(allow_null=True)
    console_url = serializers.CharField(help_text="The browser's VNC console page.")
    serial_url = serializers.CharField(help_text="The browser's serial console page.")


class VirtualMachineDetailSerializer(VirtualMachineSerializer):
    """A VM with how to reach it and the operations asked for it lately."""

    access = serializers.SerializerMethodField()
    operations = serializers.SerializerMethodField()

    class Meta(VirtualMachineSerializer.Meta):
        fields = (*VirtualMachineSerializer.Meta.fields, "purpose", "login_user", "access",
                  "operations")
        read_only_fields = fields

    @extend_schema_field(AccessSerializer)
    def get_access(self, vm: VirtualMachine) -> dict:
        """Return the SSH commands and console pages the VM's page shows."""
        from vms.selectors import vm_ssh_access

        ssh = vm_ssh_access(vm)
        request = self.context.get("request")

        def absolute(name: str) -> str:
            path = reverse(name, args=[vm.pk])
            return request.build_absolute_uri(path) if request is not None else path

        return {"ssh_user": ssh.user, "ssh_inside": ssh.inside, "ssh_outside": ssh.outside,
                "public_ip": ssh.public_ip.address if ssh.public_ip else None,
                "ssh_port": ssh.ssh_port.port if ssh.ssh_port else None,
                "console_url": absolute("console:vnc"), "serial_url": absolute("console:serial")}

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_operations(self, vm: VirtualMachine) -> list[str]:
        """Return the API paths of the VM's last ten operations, newest first."""
        return [api_url("operation-detail", pk)
                for pk in vm.operations.order_by("-pk").values_list("pk", flat=True)[:10]]


class OperationSerializer(serializers.ModelSerializer):
    """An operation with its status and progress (the step under way)."""

    url = serializers.SerializerMethodField()
    vm = serializers.SerializerMethodField()
    requested_by = serializers.CharField(source="requested_by.username", allow_null=True,
                                         default=None)
    children = serializers.SerializerMethodField()
    detail = serializers.SerializerMethodField(
        help_text="The hypervisor's own text of a failure: admins only, '' for others.")

    class Meta:
        model = Operation
        fields = ("id", "url", "kind", "status", "progress", "message", "detail", "vm", "host_id",
                  "parent_id", "children", "requested_by", "created_at", "started_at",
                  "finished_at")
        read_only_fields = fields

    def get_url(self, op: Operation) -> str:
        """Return the operation's API path, to poll."""
        return api_url("operation-detail", op.pk)

    def get_detail(self, op: Operation) -> str:
        """Return the raw failure text to admins, as the pages show it only to them."""
        request = self.context.get("request")
        user = getattr(request, "user", None)
        return op.detail if getattr(user, "is_portal_admin", False) else ""

    def get_vm(self, op: Operation) -> str | None:
        """Return the API path of the VM it acts on, if any."""
        return api_url("vm-detail", op.vm_id) if op.vm_id else None

    @extend_schema_field(serializers.DictField(child=serializers.IntegerField()))
    def get_children(self, op: Operation) -> dict[str, int]:
        """Return how many child operations stand in each status."""
        return op.children_progress()


class OperationAcceptedSerializer(serializers.Serializer):
    """What an action answers (202): the operation queued, to poll at its URL."""

    operation = OperationSerializer()


class ApprovalStepSerializer(serializers.Serializer):
    """One decision on a request."""

    actor = serializers.CharField(source="actor.username")
    stage = serializers.CharField()
    decision = serializers.CharField()
    reason = serializers.CharField()
    created_at = serializers.DateTimeField()


class VMRequestSerializer(serializers.ModelSerializer):
    """A request for a VM or a change to one, with its stage."""

    url = serializers.SerializerMethodField()
    requester = serializers.CharField(source="requester.username")
    faculty = serializers.CharField(source="faculty.username", allow_null=True, default=None)
    vm = serializers.SerializerMethodField()

    class Meta:
        model = VMRequest
        fields = ("id", "url", "kind", "name", "stage", "requester", "organisation_id",
                  "faculty", "template_id", "security_domain_id", "public_ip", "params",
                  "vcpus", "memory_mib", "disk_gib", "purpose", "generate_password", "vm",
                  "created_at", "updated_at")
        read_only_fields = fields

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_vm(self, req: VMRequest) -> str | None:
        """Return the API path of the VM it made or changes, if any."""
        pk = req.target_id if req.is_change else getattr(getattr(req, "vm", None), "pk", None)
        return api_url("vm-detail", pk) if pk else None

    def get_url(self, req: VMRequest) -> str:
        """Return the request's API path."""
        return api_url("request-detail", req.pk)


class VMRequestDetailSerializer(VMRequestSerializer):
    """A request with its approval history."""

    steps = ApprovalStepSerializer(many=True, read_only=True)

    class Meta(VMRequestSerializer.Meta):
        fields = (*VMRequestSerializer.Meta.fields, "steps")
        read_only_fields = fields


@extend_schema_field({"type": "string", "pattern": "^[a-z][a-z0-9-]{0,62}$", "maxLength": 63})
class VMNameField(serializers.CharField):
    """A VM's name: the request form checks it with every other field, in one answer."""


class VMRequestCreateSerializer(serializers.Serializer):
    """What a requester sends to ask for a VM (checked as the request form checks it)."""

    name = VMNameField(max_length=63, help_text="Lower-case letters, digits and hyphens, "
                                                "starting with a letter.")
    template = serializers.IntegerField(min_value=1, max_value=2**31 - 1,
                                        help_text="Id of a template from /templates/.")
    vcpus = serializers.IntegerField(min_value=1, max_value=2**31 - 1)
    memory_mib = serializers.IntegerField(min_value=64, max_value=2**31 - 1)
    disk_gib = serializers.IntegerField(min_value=1, max_value=2**31 - 1)
    purpose = serializers.CharField(max_length=2000, allow_blank=True)
    security_domain = serializers.IntegerField(
        min_value=1, max_value=2**31 - 1, help_text="Id of a domain from /security-domains/.")
    public_ip = serializers.BooleanField(default=False)
    faculty = serializers.CharField(
        required=False, allow_blank=True, max_length=150,
        help_text="Username of the faculty who approves first (students only).")
    ssh_keys = serializers.ListField(child=serializers.IntegerField(min_value=1,
                                                                    max_value=2**31 - 1),
                                     required=False, default=list, max_length=20,
                                     help_text="Ids of your SSH keys the VM accepts.")
    generate_password = serializers.BooleanField(default=False)


class DecisionSerializer(serializers.Serializer):
    """An approver's decision: the reason (required to reject) and the stage seen."""

    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000,
                                   default="")
    seen_stage = serializers.ChoiceField(
        choices=["faculty", "org_admin", "admin"], required=False, allow_null=True,
        default=None, help_text="The stage the approver saw; a request that moved on since "
                                "is left as it is (409).")


class SnapshotSerializer(serializers.ModelSerializer):
    """A snapshot of a VM."""

    class Meta:
        model = Snapshot
        fields = ("id", "vm_id", "name", "description", "kind", "state", "vm_state",
                  "created_at")
        read_only_fields = fields


class SnapshotCreateSerializer(serializers.Serializer):
    """The name and description of a snapshot to take."""

    name = serializers.CharField(max_length=64)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True,
                                        default="")


class DiskSerializer(serializers.ModelSerializer):
    """An extra disk of a VM."""

    class Meta:
        model = ExtraDisk
        fields = ("id", "vm_id", "size_gib", "target", "state", "created_at")
        read_only_fields = fields


class TemplateSerializer(serializers.ModelSerializer):
    """A template a VM may be installed from, with the sizes it allows."""

    class Meta:
        model = Template
        fields = ("id", "name", "os_name", "min_vcpus", "max_vcpus", "min_memory_mib",
                  "max_memory_mib", "min_disk_gib", "max_disk_gib", "cloud_init")
        read_only_fields = fields


class SecurityDomainSerializer(serializers.ModelSerializer):
    """A network zone the caller's organisation may place VMs in."""

    class Meta:
        model = SecurityDomain
        fields = ("id", "name", "description")
        read_only_fields = fields
