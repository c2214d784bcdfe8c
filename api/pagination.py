"""The API's lists: cursor pages (stable under inserts, constant cost per page), filters."""

from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request


class PortalCursorPagination(CursorPagination):
    """Pages of 50 (`?page_size=` up to 200), newest first, with next/previous cursors."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    ordering = "-id"

    def get_page_size(self, request: Request) -> int:
        """Return the page size asked for; refuse anything but a whole number in range (400)."""
        given = request.query_params.get(self.page_size_query_param)
        if given is None:
            return self.page_size
        if not given.isdigit() or not 1 <= int(given) <= self.max_page_size:
            raise ValidationError({self.page_size_query_param: [
                f"Give a whole number from 1 to {self.max_page_size}."]})
        return int(given)

    def get_schema_operation_parameters(self, view: object) -> list[dict]:
        """Describe the cursor and the page size with its bounds."""
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1,
                                       "maximum": self.max_page_size}
        return parameters


class ListFiltersOnly:
    """Apply the list's filters (`filterset_class`) to the list only, never to one object."""

    def filter_queryset(self, queryset):  # noqa: ANN001, ANN201 - DRF's signature
        """Filter the list; an object is found among all the caller sees, as on its page."""
        if getattr(self, "action", None) != "list":
            return queryset
        return super().filter_queryset(queryset)
