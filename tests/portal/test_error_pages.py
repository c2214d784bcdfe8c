"""Error pages: in the portal's look, with a way back; 500 renders without a request."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.test import Client, RequestFactory
from django.urls import reverse

from portal import views
from tests.portal.test_rules import make_vm

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("method", ["get", "post", "put", "delete"])
@pytest.mark.parametrize("word", ["banana", "starts", "start-now", "console2"])
def test_an_unknown_word_after_a_vm_answers_404_whatever_the_method(site, method, word):
    vm = make_vm(site)
    response = getattr(site.client(site.student), method)(f"/vms/{vm.pk}/{word}/")
    assert response.status_code == 404
    assert 'id="error-page"' in response.content.decode()


def test_a_known_action_still_answers_only_post(site):
    vm = make_vm(site)
    assert site.client(site.student).get(f"/vms/{vm.pk}/start/").status_code == 405


def test_the_404_page_has_the_portal_look_and_ways_back(site):
    client = site.client(site.student)
    came_from = "http://testserver" + reverse("vms:vm_list")
    response = client.get("/no/such/page/", HTTP_REFERER=came_from)
    body = response.content.decode()
    assert response.status_code == 404
    assert "There is nothing here" in body and "bg-portal" in body
    assert 'href="/vms/"' in body  # the navigation of base.html
    assert 'id="error-back"' in body and came_from in body
    assert f'href="{reverse("dashboard")}" id="error-home"' in body


def test_the_404_page_offers_no_way_back_to_another_site(site):
    body = site.client(site.student).get(
        "/no/such/page/", HTTP_REFERER="https://evil.example/phish").content.decode()
    assert "evil.example" not in body and 'id="error-back"' not in body
    assert 'id="error-home"' in body


def test_another_users_vm_answers_the_same_styled_404(site):
    vm = make_vm(site)
    response = site.client(site.other_student).get(reverse("vms:vm_detail", args=[vm.pk]))
    assert response.status_code == 404 and "There is nothing here" in response.content.decode()


def test_the_403_page_has_the_portal_look(site):
    request = RequestFactory().get("/somewhere/")
    request.user = site.student
    response = views.permission_denied(request, PermissionDenied())
    body = response.content.decode()
    assert response.status_code == 403
    assert "You may not do this" in body and 'id="error-home"' in body and "bg-portal" in body


def test_a_refused_form_says_it_expired_in_the_portal_look(site):
    client = Client(enforce_csrf_checks=True)
    client.force_login(site.student)
    response = client.post(reverse("vms:request_create"), {"name": "x"})
    body = response.content.decode()
    assert response.status_code == 403
    assert "This form has expired" in body and 'id="error-home"' in body


def test_the_500_page_renders_without_context_processors(site, monkeypatch):
    def broken(request):
        raise RuntimeError("the database is gone")

    monkeypatch.setattr("portal.context_processors.navigation", broken)
    response = views.server_error(RequestFactory().get("/"))
    body = response.content.decode()
    assert response.status_code == 500
    assert "Something went wrong on our side" in body and "bg-portal" in body
    assert f'href="{reverse("dashboard")}"' in body


def test_a_crashing_view_answers_the_styled_500(site, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("portal.views.hosts_with_usage", crash)
    client = Client(raise_request_exception=False)
    client.force_login(site.admin)
    response = client.get(reverse("dashboard"))
    assert response.status_code == 500
    body = response.content.decode()
    assert "Something went wrong on our side" in body and "boom" not in body
