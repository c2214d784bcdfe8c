"""Django admin for users and organisations."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from .models import Organisation, User


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
