"""VLANs and their pools of private IP + MAC pairs."""

from __future__ import annotations

import ipaddress

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

MAC_VALIDATOR = RegexValidator(
    r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z", "Give a MAC address as six lower-case hex pairs."
)


class VLAN(models.Model):
    """A layer-2 network segment, reached on the hosts through a libvirt network."""

    name = models.CharField(max_length=63, unique=True)
    tag = models.PositiveIntegerField(
        unique=True, validators=[MinValueValidator(1), MaxValueValidator(4094)]
    )
    subnet = models.CharField(max_length=43, help_text="CIDR, e.g. 192.168.122.0/24.")
    gateway = models.GenericIPAddressField(protocol="IPv4", null=True, blank=True)
    network_name = models.CharField(
        "libvirt network", max_length=63, default="default",
        help_text="The libvirt network on every host that carries this VLAN.",
    )

    class Meta:
        ordering = ["tag"]
        verbose_name = "VLAN"

    def __str__(self) -> str:
        return f"{self.name} (VLAN {self.tag})"

    def clean(self) -> None:
        """Refuse a malformed subnet or a gateway outside it."""
        try:
            net = ipaddress.IPv4Network(self.subnet, strict=True)
        except ValueError as exc:
            raise ValidationError({"subnet": f"Not an IPv4 network: {exc}"}) from exc
        if self.gateway and ipaddress.IPv4Address(self.gateway) not in net:
            raise ValidationError({"gateway": "The gateway must lie inside the subnet."})


class PrivateIP(models.Model):
    """One private address with its MAC, free or held by a VM."""

    vlan = models.ForeignKey(VLAN, on_delete=models.PROTECT, related_name="addresses")
    address = models.GenericIPAddressField(protocol="IPv4", unique=True)
    mac = models.CharField("MAC", max_length=17, unique=True, validators=[MAC_VALIDATOR])
    vm = models.OneToOneField(
        "vms.VirtualMachine", on_delete=models.SET_NULL, null=True, blank=True,
        related_name="private_ip",
    )
    allocated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["vlan", "id"]
        verbose_name = "private IP"
        indexes = [models.Index(fields=["vlan", "vm"], name="networking_privateip_free")]

    def __str__(self) -> str:
        return self.address
