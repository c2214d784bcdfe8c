"""VLANs, security domains, and the pools VMs draw addresses from."""

from __future__ import annotations

import ipaddress

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

MAC_VALIDATOR = RegexValidator(
    r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z", "Give a MAC address as six lower-case hex pairs."
)
LIBVIRT_NAME_VALIDATOR = RegexValidator(
    r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}\Z",
    "Use letters, digits, '.', '_' and '-' only (a libvirt name).",
)


class AttachMode(models.TextChoices):
    """How a VM's interface reaches the VLAN on its host."""

    NETWORK = "network", "The libvirt network itself"
    PORTGROUP = "portgroup", "A portgroup of the libvirt network"
    TAG = "tag", "A VLAN tag on the interface (Open vSwitch bridge)"


class VLAN(models.Model):
    """A layer-2 network segment, reached on the hosts through a libvirt network."""

    name = models.CharField(max_length=63, unique=True)
    tag = models.PositiveIntegerField(
        unique=True, validators=[MinValueValidator(1), MaxValueValidator(4094)]
    )
    subnet = models.CharField(max_length=43, help_text="CIDR, e.g. 192.168.122.0/24.")
    gateway = models.GenericIPAddressField(protocol="IPv4", null=True, blank=True)
    network_name = models.CharField(
        "libvirt network", max_length=63, default="default", validators=[LIBVIRT_NAME_VALIDATOR],
        help_text="The libvirt network on every host that carries this VLAN.",
    )
    attach = models.CharField(
        max_length=16, choices=AttachMode.choices, default=AttachMode.NETWORK,
        help_text="How interfaces join the VLAN: whichever the hosts' network uses.",
    )
    portgroup = models.CharField(
        max_length=63, blank=True, validators=[LIBVIRT_NAME_VALIDATOR],
        help_text="Portgroup name, when interfaces attach through a portgroup.",
    )

    class Meta:
        ordering = ["tag"]
        verbose_name = "VLAN"

    def __str__(self) -> str:
        return f"{self.name} (VLAN {self.tag})"

    @property
    def network(self) -> ipaddress.IPv4Network:
        """Return the VLAN's subnet."""
        return ipaddress.IPv4Network(self.subnet)

    def clean(self) -> None:
        """Refuse a malformed subnet, a gateway outside it, or a portgroup mode without one."""
        errors = {}
        try:
            net = ipaddress.IPv4Network(self.subnet, strict=True)
        except ValueError as exc:
            raise ValidationError({"subnet": f"Not an IPv4 network: {exc}"}) from exc
        if self.gateway and ipaddress.IPv4Address(self.gateway) not in net:
            errors["gateway"] = "The gateway must lie inside the subnet."
        if self.attach == AttachMode.PORTGROUP and not self.portgroup:
            errors["portgroup"] = "Name the portgroup interfaces attach through."
        if errors:
            raise ValidationError(errors)


class SecurityDomain(models.Model):
    """A named network zone (Research, Private, ...) on one VLAN, offered to organisations."""

    name = models.CharField(max_length=63, unique=True)
    vlan = models.ForeignKey(VLAN, on_delete=models.PROTECT, related_name="security_domains")
    organisations = models.ManyToManyField(
        "accounts.Organisation", related_name="security_domains", blank=True,
        help_text="Organisations whose members may place VMs here.",
    )
    description = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class PrivateIP(models.Model):
    """One private address with its MAC, free or held by a VM or a host."""

    vlan = models.ForeignKey(VLAN, on_delete=models.PROTECT, related_name="addresses")
    address = models.GenericIPAddressField(protocol="IPv4", unique=True)
    mac = models.CharField("MAC", max_length=17, unique=True, validators=[MAC_VALIDATOR])
    # A VM holds two addresses only while it moves between security domains, and those lie
    # on different VLANs: one address per VM and VLAN (a constraint below).
    vm = models.ForeignKey(
        "vms.VirtualMachine", on_delete=models.SET_NULL, null=True, blank=True,
        related_name="private_ips",
    )
    host = models.ForeignKey(
        "hosts.Host", on_delete=models.SET_NULL, null=True, blank=True,
        related_name="private_ips", help_text="Set when a host, not a VM, uses the address.",
    )
    allocated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["vlan", "id"]
        verbose_name = "private IP"
        indexes = [
            # Allocation asks for the first free row of a VLAN: keep only free rows indexed,
            # so the lookup stays one index step however full the pool is.
            models.Index(fields=["vlan", "id"], name="networking_privateip_free",
                         condition=models.Q(vm__isnull=True, host__isnull=True)),
            models.Index(fields=["vm"], name="networking_privateip_vm"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(vm__isnull=True) | models.Q(host__isnull=True),
                name="%(app_label)s_%(class)s_one_holder",
            ),
            # Concurrent allocators for one VM cannot both win: the loser re-reads the winner's.
            models.UniqueConstraint(
                fields=["vm", "vlan"], condition=models.Q(vm__isnull=False),
                name="%(app_label)s_%(class)s_one_per_vm_vlan",
            ),
        ]

    def __str__(self) -> str:
        return self.address

    @property
    def holder(self) -> object | None:
        """Return the VM or host that holds the address, if any."""
        return self.vm or self.host


class PublicIP(models.Model):
    """A public address, reached from outside through NAT to a VM's private address."""

    address = models.GenericIPAddressField(protocol="IPv4", unique=True)
    vm = models.OneToOneField(
        "vms.VirtualMachine", on_delete=models.SET_NULL, null=True, blank=True,
        related_name="public_ip",
    )
    allocated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        verbose_name = "public IP"
        indexes = [models.Index(fields=["id"], name="networking_publicip_free",
                                condition=models.Q(vm__isnull=True))]

    def __str__(self) -> str:
        return self.address


class NATMapping(models.Model):
    """A public IP forwarded to a private one on the NAT box, as the portal last applied it."""

    public_ip = models.OneToOneField(PublicIP, on_delete=models.CASCADE, related_name="mapping")
    private_address = models.GenericIPAddressField(protocol="IPv4")
    vm = models.ForeignKey("vms.VirtualMachine", on_delete=models.CASCADE,
                           related_name="nat_mappings")
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["public_ip_id"]
        verbose_name = "NAT mapping"

    def __str__(self) -> str:
        return f"{self.public_ip.address} -> {self.private_address}"


class SSHPort(models.Model):
    """A TCP port of the NAT box's address, free or forwarded to a VM's SSH server (port 22)."""

    address = models.GenericIPAddressField(
        protocol="IPv4", help_text="The NAT box's address people connect to.")
    port = models.PositiveIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(65535)])
    vm = models.OneToOneField(
        "vms.VirtualMachine", on_delete=models.SET_NULL, null=True, blank=True,
        related_name="ssh_port",
    )
    private_address = models.GenericIPAddressField(
        protocol="IPv4", null=True, blank=True,
        help_text="The VM address the port forwards to, as the portal last applied it.")
    allocated_at = models.DateTimeField(null=True, blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["address", "port"]
        verbose_name = "SSH port"
        indexes = [models.Index(fields=["address", "port"], name="networking_sshport_free",
                                condition=models.Q(vm__isnull=True))]
        constraints = [
            models.UniqueConstraint(fields=["address", "port"],
                                    name="%(app_label)s_%(class)s_unique_port"),
        ]

    def __str__(self) -> str:
        return f"{self.address}:{self.port}"
