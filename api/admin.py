"""Django admin for API tokens: everyone's, read-only, with a Revoke action."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from .models import ApiToken
from .tokens import token_revoke


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """See every token (never its secret) and revoke the chosen ones."""

    list_display = ("name", "owner", "prefix", "read_only", "expires_at", "last_used_at",
                    "created_at", "revoked_at")
    list_filter = ("read_only", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("name", "owner__username", "prefix")
    readonly_fields = ("owner", "name", "prefix", "read_only", "expires_at", "last_used_at",
                       "created_at", "revoked_at", "revoked_by")
    exclude = ("secret_hash",)
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Tokens are made by their owners, on their tokens page."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        """Nothing of a token is edited; it is only revoked."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        """Revoked tokens stay, to show who revoked them and when."""
        return False

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Revoke each chosen token that is still usable."""
        count = 0
        for token in queryset.filter(revoked_at__isnull=True):
            token_revoke(token=token, actor=request.user)
            count += 1
        messages.success(request, f"Revoked {count} token(s).")
