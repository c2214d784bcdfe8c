"""Personal API tokens: made and revoked on their page, stored hashed, acting as their owner."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from api.models import ApiToken
from api.tokens import token_create
from tests.api.conftest import v1

pytestmark = pytest.mark.django_db
TOKEN = re.compile(r"vmp_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


def bearer(text: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {text}")
    return client


def _csrf(client: Client, url: str) -> str:
    client.get(url)
    return client.cookies["csrftoken"].value


def test_made_on_the_page_shown_once_stored_hashed(site):
    client = Client(enforce_csrf_checks=True)
    client.force_login(site.student)
    url = reverse("tokens:token_list")
    refused = client.post(url, {"name": "notebook"})
    assert refused.status_code == 403  # no CSRF token, no token
    response = client.post(url, {"name": "notebook", "read_only": "on",
                                 "csrfmiddlewaretoken": _csrf(client, url)})
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    text = TOKEN.search(response.content.decode()).group(0)
    token = ApiToken.objects.get()
    assert token.owner == site.student and token.read_only and token.name == "notebook"
    secret = text.split("_", 2)[2]
    assert token.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(ApiToken.objects.values().get())
    again = client.get(url).content.decode()
    assert secret not in again and token.prefix in again  # listed, never shown again
    assert bearer(text).get(v1("vms/")).status_code == 200


def test_page_refuses_a_bad_name_and_a_past_expiry(site):
    client = site.client(site.student)
    url = reverse("tokens:token_list")
    response = client.post(url, {"name": "x", "expires_at": "2000-01-01"})
    assert b"Choose an expiry in the future" in response.content
    assert not ApiToken.objects.exists()


def test_revoke_on_the_page(site):
    token, text = token_create(owner=site.student, name="ci")
    assert site.client(site.other_student).post(
        reverse("tokens:token_revoke", args=[token.pk])).status_code == 404
    url = reverse("tokens:token_revoke", args=[token.pk])
    asked = site.client(site.student).post(url)  # without JavaScript: a page asks first
    assert asked.status_code == 200 and b"Revoke the token ci?" in asked.content
    token.refresh_from_db()
    assert token.revoked_at is None
    response = site.client(site.student).post(url, {"confirmed": "1"})
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None and token.revoked_by == site.student
    refused = bearer(text).get(v1("vms/"))
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]


def test_admins_see_and_revoke_anyones_in_the_admin(site):
    token, text = token_create(owner=site.student, name="ci")
    client = site.client(site.admin)
    listing = client.get(reverse("admin:api_apitoken_changelist"))
    assert listing.status_code == 200 and b"ci" in listing.content
    assert token.secret_hash.encode() not in listing.content
    client.post(reverse("admin:api_apitoken_changelist"),
                {"action": "revoke", "_selected_action": [token.pk]})
    token.refresh_from_db()
    assert token.revoked_by == site.admin
    assert bearer(text).get(v1("vms/")).status_code == 401
    assert site.client(site.orgadmin).get(
        reverse("admin:api_apitoken_changelist")).status_code == 302


def test_expired_wrong_and_malformed_tokens_are_refused(site):
    token, text = token_create(owner=site.student, name="old",
                               expires_at=timezone.now() + timedelta(hours=1))
    assert bearer(text).get(v1("vms/")).status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now())
    assert bearer(text).get(v1("vms/")).status_code == 401
    _, good = token_create(owner=site.student, name="new")
    for wrong in (good[:-2] + "xx", "vmp_nothing_here", "garbage", good + " extra"):
        response = bearer(wrong).get(v1("vms/"))
        assert response.status_code == 401, wrong
        assert response["WWW-Authenticate"].startswith("Bearer")


def test_an_inactive_owners_token_opens_nothing(site):
    _, text = token_create(owner=site.student, name="ci")
    site.student.is_active = False
    site.student.save()
    assert bearer(text).get(v1("vms/")).status_code == 401


def test_last_used_is_recorded(site):
    token, text = token_create(owner=site.student, name="ci")
    bearer(text).get(v1("vms/"))
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_session_works_with_csrf(site):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(site.student)
    assert client.get(v1("vms/")).status_code == 200
    assert client.post(v1("requests/"), {}, format="json").status_code == 403


def test_throttled_per_token(site, settings):
    settings.PORTAL_API_RATE = "3/minute"
    from django.core.cache import cache

    cache.clear()
    _, one = token_create(owner=site.student, name="one")
    _, two = token_create(owner=site.student, name="two")
    codes = [bearer(one).get(v1("templates/")).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    assert bearer(two).get(v1("templates/")).status_code == 200  # its own count
    cache.clear()
