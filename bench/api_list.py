"""Measure the API's VM list: 50-VM cursor pages of a 10,000-VM table, queries per page.

The API narrows with select_related/prefetch_related and pages by cursor (`WHERE id < …`), so
its query count is the same for every page and page size, and a page deep in the list costs
what the first one does (no OFFSET). Runs on a throw-away SQLite database.

    make bench
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.lists import ROUNDS, VMS, setup, timed  # noqa: E402 - sets the environment first


def main() -> None:
    """Time the first page, a page deep in the list, and a page of 200."""
    import django

    django.setup()
    from rest_framework.test import APIClient

    from api.tokens import token_create

    admin = setup()
    _, text = token_create(owner=admin, name="bench")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {text}")
    url = "/api/v1/vms/"
    deep = url
    for _ in range(100):  # the cursor of page 101, rows 5,001 to 5,050
        deep = client.get(deep).json()["next"]

    def page(at: str, size: int = 50) -> object:
        def call() -> None:
            response = client.get(at, {"page_size": size} if size != 50 else None)
            assert response.status_code == 200 and len(response.json()["results"]) == size
        return call

    print(f"API VM list, {VMS} VMs, pages of 50 by cursor, SQLite, median of {ROUNDS}")
    figures = []
    for label, call in (("first page", page(url)), ("page 101 (rows 5,001-5,050)", page(deep)),
                        ("first page of 200", page(url, 200))):
        ms, queries = timed(call)
        figures.append(queries)
        print(f"{label:30s} {ms:7.1f} ms, {queries} queries")
    assert len(set(figures)) == 1, f"queries per page vary: {figures}"
    print("queries per page: constant; budget: a 50-VM page well under 100 ms")


if __name__ == "__main__":
    main()
