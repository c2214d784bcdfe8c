"""Django admin for VLANs and private addresses."""

from django.contrib import admin

from .models import VLAN, PrivateIP


@admin.register(VLAN)
class VLANAdmin(admin.ModelAdmin):
    """Manage VLANs."""

    list_display = ("name", "tag", "subnet", "gateway", "network_name")


@admin.register(PrivateIP)
class PrivateIPAdmin(admin.ModelAdmin):
    """See private addresses and who holds them."""

    list_display = ("address", "mac", "vlan", "vm", "allocated_at")
    list_filter = ("vlan",)
    search_fields = ("address", "mac", "vm__name")
    raw_id_fields = ("vm",)
