"""The schema and its Swagger UI and Redoc pages: served from the portal's own files (CSP)."""

from __future__ import annotations

import re

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/api/v1/docs/", "/api/v1/redoc/"])
def test_pages_load_only_own_scripts_and_styles(path):
    response = Client().get(path)
    assert response.status_code == 200
    html = response.content.decode()
    assert "<style" not in html and "https://" not in html
    scripts = re.findall(r"<script([^>]*)>", html)
    assert scripts and all('src="/' in attrs for attrs in scripts)  # none inline
    assert "script-src 'self'" in response["Content-Security-Policy"]


def test_swagger_script_and_schema_are_served():
    assert Client().get("/api/v1/docs/?script=")["Content-Type"].startswith(
        "application/javascript")
    schema = Client().get("/api/v1/schema/?format=json").json()
    assert schema["info"]["title"] == "VM portal API"
    assert "tokenAuth" in schema["components"]["securitySchemes"]
    assert all(path.startswith("/api/v1/") for path in schema["paths"])


def test_the_index_says_where_to_start_and_unknown_paths_answer_json():
    index = Client().get("/api/v1/")
    assert index.status_code == 200
    body = index.json()
    assert body["schema"] == "http://testserver/api/v1/schema/"
    assert body["resources"]["vms"] == "http://testserver/api/v1/vms/"
    # Every list it names answers (here 401: no token), none is a dead link.
    for url in body["resources"].values():
        assert Client().get(url).status_code == 401, url
    refused = Client().post("/api/v1/")
    assert refused.status_code == 405 and refused.json()["detail"] == 'Method "POST" not allowed.'
    lost = Client().get("/api/v1/nothing-here/")
    assert lost.status_code == 404 and lost.json() == {"detail": "Not found."}
