"""The API's lists: cursor pages (stable under inserts, constant cost per page), filters."""

from __future__ import annotations

from rest_framework.pagination import CursorPagination


class PortalCursorPagination(CursorPagination):
    """Pages of 50 (`?page_size=` up to 200), newest first, with next/previous cursors."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    ordering = "-id"


class ListFiltersOnly:
    """Apply the list's filters (`filterset_class`) to the list only, never to one object."""

    def filter_queryset(self, queryset):  # noqa: ANN001, ANN201 - DRF's signature
        """Filter the list; an object is found among all the caller sees, as on its page."""
        if getattr(self, "action", None) != "list":
            return queryset
        return super().filter_queryset(queryset)
