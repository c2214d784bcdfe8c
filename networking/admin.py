"""Django admin for VLANs and private addresses."""

from django.contrib import admin

from .models import VLAN, NATMapping, PrivateIP, PublicIP, SecurityDomain, SSHPort


@admin.register(VLAN)
class VLANAdmin(admin.ModelAdmin):
    """Manage VLANs."""

    list_display = ("name", "tag", "subnet", "gateway", "network_name", "attach", "portgroup")


@admin.register(PrivateIP)
class PrivateIPAdmin(admin.ModelAdmin):
    """See private addresses and who holds them."""

    list_display = ("address", "mac", "vlan", "vm", "host", "allocated_at")
    list_filter = ("vlan",)
    search_fields = ("address", "mac", "vm__name")
    raw_id_fields = ("vm",)


@admin.register(SecurityDomain)
class SecurityDomainAdmin(admin.ModelAdmin):
    """Manage security domains and the organisations they are offered to."""

    list_display = ("name", "vlan", "description")
    filter_horizontal = ("organisations",)


@admin.register(PublicIP)
class PublicIPAdmin(admin.ModelAdmin):
    """See public addresses and who holds them."""

    list_display = ("address", "vm", "allocated_at")
    search_fields = ("address", "vm__name")
    raw_id_fields = ("vm",)


@admin.register(NATMapping)
class NATMappingAdmin(admin.ModelAdmin):
    """See NAT mappings as last applied."""

    list_display = ("public_ip", "private_address", "vm", "applied_at")
    readonly_fields = ("public_ip", "private_address", "vm", "applied_at")


@admin.register(SSHPort)
class SSHPortAdmin(admin.ModelAdmin):
    """See forwarded SSH ports and the VM each reaches, as last applied."""

    list_display = ("address", "port", "vm", "private_address", "applied_at")
    list_filter = ("address",)
    search_fields = ("port", "vm__name", "private_address")
    readonly_fields = ("address", "port", "vm", "private_address", "allocated_at", "applied_at")
