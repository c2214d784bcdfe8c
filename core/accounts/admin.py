"""Django admin for users and organisations."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from .models import Organisation, SSHKey, User


@admin.register(Organisation)
class OrganisationAdmin(admin.ModelAdmin):
    """Manage organisations."""

    list_display = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    search_fields = ("name",)


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    """Manage users with their role and organisation."""

    list_display = ("username", "email", "first_name", "last_name", "role", "organisation",
                    "is_active")
    list_filter = ("role", "organisation", "is_active", "is_staff")
    fieldsets = (*BaseUserAdmin.fieldsets, ("Portal", {"fields": ("role", "organisation")}))
    add_fieldsets = (
        *BaseUserAdmin.add_fieldsets,
        ("Portal", {"fields": ("email", "role", "organisation")}),
    )


@admin.register(SSHKey)
class SSHKeyAdmin(admin.ModelAdmin):
    """Look at users' public keys; they are added by their owners."""

    list_display = ("name", "owner", "key_type", "bits", "fingerprint", "created_at")
    list_filter = ("key_type",)
    search_fields = ("name", "owner__username", "fingerprint")
    readonly_fields = ("owner", "key_type", "public_key", "bits", "fingerprint", "created_at")

    def has_add_permission(self, request: object) -> bool:
        """Keys are added by their owners, where they are checked."""
        return False
