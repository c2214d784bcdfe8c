"""Response headers: a Content-Security-Policy without inline code, no-store for signed-in users."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def directives(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    out = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


@pytest.mark.parametrize("page", ["login", "dashboard", "vms:approvals", "vms:vm_list",
                                  "hosts:host_list"])
def test_every_page_has_a_csp_without_unsafe_inline(site, page):
    client = site.client(None if page == "login" else site.admin)
    response = client.get(reverse(page))
    assert response.status_code == 200
    csp = directives(response)
    assert "unsafe-inline" not in response["Content-Security-Policy"]
    assert "unsafe-eval" not in response["Content-Security-Policy"]
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["style-src"] == ["'self'"]  # no nonce where the page uses none
    assert csp["img-src"] == ["'self'", "data:"]
    assert csp["connect-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["form-action"] == ["'self'"]
    assert csp["base-uri"] == ["'self'"]
    assert csp["object-src"] == ["'none'"]


def test_the_console_pages_may_reach_the_proxy_and_nothing_else(site, settings):
    from vms.models import VirtualMachine, VMState

    vm = VirtualMachine.objects.create(
        name="con", owner=site.student, organisation=site.org, template=site.template,
        host=site.host, vcpus=1, memory_mib=512, disk_gib=2, state=VMState.RUNNING)
    client = site.client(site.student)
    settings.PORTAL_CONSOLE_URL = ""
    settings.PORTAL_CONSOLE_LISTEN = "127.0.0.1:6080"
    vnc = client.get(reverse("console:vnc", args=[vm.pk]), HTTP_HOST="localhost:8000")
    assert directives(vnc)["connect-src"] == ["'self'", "ws://localhost:6080"]
    assert directives(vnc)["style-src"] == ["'self'"]
    settings.PORTAL_CONSOLE_URL = "wss://portal.example.org/console"
    serial = client.get(reverse("console:serial", args=[vm.pk]))
    csp = directives(serial)
    assert csp["connect-src"] == ["'self'", "wss://portal.example.org"]
    # xterm.js makes <style> elements: the serial page alone carries a nonce for them.
    nonce = re.search(r'data-style-nonce="([^"]+)"', serial.content.decode()).group(1)
    assert csp["style-src"] == ["'self'", f"'nonce-{nonce}'"]
    assert "unsafe-inline" not in serial["Content-Security-Policy"]


def test_templates_carry_no_inline_script_style_or_handler():
    pattern = re.compile(r"<script(?![^>]*\bsrc=)|<style|\sstyle=|\son[a-z]+=|javascript:",
                         re.IGNORECASE)
    found = []
    for path in sorted((ROOT / "templates").rglob("*.html")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = re.sub(r"\{#.*?#\}", "", line)
            if pattern.search(code):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not found, "\n".join(found)


def test_htmx_is_told_not_to_inject_its_indicator_style(site):
    page = site.client(site.student).get(reverse("dashboard")).content.decode()
    assert '<meta name="htmx-config" content=\'{"includeIndicatorStyles": false}\'>' in page


@pytest.mark.parametrize("page", ["dashboard", "vms:vm_list", "vms:request_list",
                                  "accounts:ssh_key_list"])
def test_signed_in_pages_are_not_stored(site, page):
    response = site.client(site.student).get(reverse(page))
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]


def test_signed_in_json_and_graphs_are_not_stored_either(site):
    response = site.client(site.student).get(reverse("accounts:faculty_search"), {"q": "fa"})
    assert "no-store" in response["Cache-Control"]


def test_anonymous_pages_and_static_files_are_left_alone(site):
    # (The login page itself is never cached: Django's LoginView says so.)
    redirect = site.client(None).get(reverse("vms:vm_list"))
    assert redirect.status_code == 302
    assert "no-store" not in redirect.get("Cache-Control", "")
    from django.conf import settings

    static = site.client(site.student).get("/" + settings.STATIC_URL.lstrip("/")
                                           + "portal/portal.css")
    assert "no-store" not in static.get("Cache-Control", "")


def test_the_middleware_skips_static_paths_for_signed_in_users(rf, site):
    from django.http import HttpResponse

    from portal.middleware import NoStoreForSignedInMiddleware

    middleware = NoStoreForSignedInMiddleware(lambda request: HttpResponse("x"))
    page = rf.get("/vms/")
    page.user = site.student
    asset = rf.get("/static/portal/portal.css")
    asset.user = site.student
    assert "no-store" in middleware(page)["Cache-Control"]
    assert not middleware(asset).has_header("Cache-Control")
