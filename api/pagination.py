"""Cursor pagination of the API's lists: stable under inserts, constant cost per page."""

from __future__ import annotations

from rest_framework.pagination import CursorPagination


class PortalCursorPagination(CursorPagination):
    """Pages of 50 (`?page_size=` up to 200), newest first, with next/previous cursors."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    ordering = "-id"
