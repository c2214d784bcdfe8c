"""The login throttle (django-axes): by account and by address, with a clear page and an unlock."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from core.accounts.services import user_login_failures
from core.auth import client_address
from tests import factories as f

pytestmark = pytest.mark.django_db
PASSWORD = "pass-word-123"  # tests.factories.UserFactory's
LOCKED = "Too many failed logins for this account or address"


@pytest.fixture(autouse=True)
def throttle(settings):
    """Run with the throttle on and its documented defaults, whatever the environment says."""
    from datetime import timedelta

    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 5
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)


def log_in(username: str, password: str, address: str = "192.0.2.10", path: str = "login"):
    """POST the login form as a browser at the address would; return the response."""
    client = Client(REMOTE_ADDR=address)
    response = client.post(reverse(path), {"username": username, "password": password})
    return client, response


def signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_the_throttle_is_the_first_backend_of_every_login():
    assert settings.AUTHENTICATION_BACKENDS[0] == "axes.backends.AxesStandaloneBackend"
    assert settings.AXES_ENABLED
    from core.ldap_config import ldap_settings

    directory = ldap_settings({"LDAP_SERVER_URI": "ldap://127.0.0.1:1",
                               "LDAP_USER_DN_TEMPLATE": "uid=%(user)s,dc=x"})
    assert directory["AUTHENTICATION_BACKENDS"][0] == "axes.backends.AxesStandaloneBackend"


def test_wrong_passwords_lock_the_account_and_then_the_right_one_is_refused(site):
    for _ in range(4):
        _client, response = log_in("stu", "wrong", address="192.0.2.1")
        assert response.status_code == 200
        assert LOCKED not in response.content.decode()
    _client, response = log_in("stu", "wrong", address="192.0.2.1")
    assert response.status_code == 429
    # From another address too: the account itself is locked.
    client, response = log_in("stu", PASSWORD, address="198.51.100.7")
    assert response.status_code == 429
    assert not signed_in(client)
    page = response.content.decode()
    assert LOCKED in page
    assert "try again in 15 minutes or ask an administrator to unlock it" in page
    assert 'id="id_username"' in page  # the login page itself, not a bare error page
    # Other accounts are not affected from a fresh address.
    client, response = log_in("fac", PASSWORD, address="198.51.100.8")
    assert response.status_code == 302 and signed_in(client)


def test_the_case_of_the_login_does_not_give_more_tries(site):
    for number, username in enumerate(("STU", "Stu", "sTu", "stU", "StU")):
        log_in(username, "wrong", address=f"192.0.2.{50 + number}")  # each from elsewhere
    client, response = log_in("stu", PASSWORD, address="198.51.100.9")
    assert response.status_code == 429 and not signed_in(client)


def test_wrong_passwords_from_one_address_lock_that_address(site):
    for username in ("fac", "oadm", "pstu", "pfac", "nobody"):
        log_in(username, "wrong", address="203.0.113.5")
    client, response = log_in("stu", PASSWORD, address="203.0.113.5")
    assert response.status_code == 429
    assert LOCKED in response.content.decode()
    assert not signed_in(client)
    # The same account from elsewhere is fine: only the address is locked.
    client, response = log_in("stu", PASSWORD, address="203.0.113.6")
    assert response.status_code == 302 and signed_in(client)


def test_the_break_glass_admin_on_the_django_admin_login_is_throttled_too(site):
    for _ in range(5):
        log_in("adm", "wrong", address="192.0.2.20", path="admin:login")
    client, response = log_in("adm", PASSWORD, address="192.0.2.21", path="admin:login")
    assert response.status_code == 429
    assert not signed_in(client)
    client, response = log_in("adm", PASSWORD, address="192.0.2.22")
    assert response.status_code == 429


def test_axes_reset_username_unlocks_the_account(site):
    for _ in range(5):
        log_in("stu", "wrong")
    assert log_in("stu", PASSWORD, address="192.0.2.99")[1].status_code == 429
    call_command("axes_reset_username", "stu")
    client, response = log_in("stu", PASSWORD, address="192.0.2.99")
    assert response.status_code == 302 and signed_in(client)


def test_an_admin_unlocks_a_person_from_their_page(site):
    for _ in range(5):
        log_in("stu", "wrong")
    assert user_login_failures(user=site.student) == 5
    page = site.client(site.admin).get(reverse("accounts:person_detail", args=[site.student.pk]))
    assert 'id="unlock-logins"' in page.content.decode()
    assert "locked out" in page.content.decode()
    # An org-admin sees the person but may not unlock.
    denied = site.client(site.orgadmin).post(
        reverse("accounts:person_unlock", args=[site.student.pk]))
    assert denied.status_code == 404
    assert user_login_failures(user=site.student) == 5
    done = site.client(site.admin).post(reverse("accounts:person_unlock",
                                                args=[site.student.pk]), follow=True)
    assert "Logins of stu are unlocked" in done.content.decode()
    assert user_login_failures(user=site.student) == 0
    client, response = log_in("stu", PASSWORD, address="192.0.2.98")
    assert response.status_code == 302 and signed_in(client)


def test_failures_expire_after_the_cool_off(site, settings):
    from datetime import timedelta

    from axes.models import AccessAttempt
    from django.utils import timezone

    for _ in range(5):
        log_in("stu", "wrong")
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    client, response = log_in("stu", PASSWORD, address="192.0.2.97")
    assert response.status_code == 302 and signed_in(client)


@pytest.mark.parametrize(("count", "forwarded", "expected"), [
    (0, "198.51.100.1", "10.0.0.1"),  # served directly: the header is anyone's to forge
    (1, "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # one proxy: the address it saw
    (2, "6.6.6.6, 198.51.100.1, 10.0.0.9", "198.51.100.1"),
    (2, "198.51.100.1", "10.0.0.1"),  # fewer hops than proxies: the connection's
])
def test_the_client_address_behind_proxies(settings, rf, count, forwarded, expected):
    settings.PORTAL_PROXY_COUNT = count
    request = rf.get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded)
    assert client_address(request) == expected


def test_a_login_from_the_test_client_needs_a_request(site):
    """The throttle needs the request; code that logs in without one is refused, not let in."""
    from axes.exceptions import AxesBackendRequestParameterRequired

    f.UserFactory(username="plain")
    with pytest.raises(AxesBackendRequestParameterRequired):
        Client().login(username="plain", password=PASSWORD)
