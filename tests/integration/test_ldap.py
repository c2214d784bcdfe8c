"""LDAP-tier tests of directory login against a real slapd (see tests/ldap_server/).

Every test goes through the real login page with the settings `core.ldap_config.ldap_settings`
makes from the LDAP_* environment of the session's throw-away server. The `directory` fixture
brings back the seed directory (and a running slapd) before each test.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.test import Client
from django.urls import reverse

from core.accounts.models import Organisation, User
from tests.ldap_server import SlapdServer, slapd  # noqa: F401

pytestmark = [pytest.mark.ldap, pytest.mark.django_db]

WRONG_CREDENTIALS = "Please enter a correct username and password"
UNAVAILABLE = "directory is unavailable"
NULL_CHARACTERS = "Null characters are not allowed"


def apply_ldap(settings, env: dict[str, str]) -> None:
    """Apply the portal's directory settings for this environment to the test's settings."""
    from core.ldap_config import ldap_settings

    for key, value in ldap_settings(env).items():
        setattr(settings, key, value)


@pytest.fixture
def directory(slapd: SlapdServer, settings) -> SlapdServer:  # noqa: F811
    """Return the seeded, running slapd with the portal configured to use it."""
    slapd.reset()
    apply_ldap(settings, slapd.settings())
    return slapd


def login(username: str, password: str, client: Client | None = None):
    """Post the login form; return the client and the response."""
    client = client or Client()
    response = client.post(reverse("login"), {"username": username, "password": password})
    return client, response


def page(response) -> str:
    return response.content.decode(errors="replace")


def assert_logged_in(client: Client, response) -> None:
    assert response.status_code == 302, page(response)[-2000:]
    assert response["Location"] == reverse("dashboard")
    assert "_auth_user_id" in client.session


def assert_refused(client: Client, response, message: str = WRONG_CREDENTIALS) -> None:
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session
    assert message in page(response), page(response)[-2000:]


def login_as(directory: SlapdServer, uid: str) -> User:
    client, response = login(uid, directory.password_of(uid))
    assert_logged_in(client, response)
    return User.objects.get(username=uid)


# ---- first login: account, role, organisation ----


def test_first_login_creates_the_user_with_name_email_role_and_organisation(directory):
    assert not User.objects.filter(username="alice").exists()
    assert not Organisation.objects.filter(name="Computer Science").exists()

    alice = login_as(directory, "alice")

    assert (alice.first_name, alice.last_name, alice.email) == (
        "Alice", "Archer", "alice@example.org")
    assert alice.role == "user"
    assert alice.organisation is not None
    assert alice.organisation.name == "Computer Science"
    assert alice.is_directory_user is True
    assert not alice.is_staff
    assert not alice.has_usable_password()


@pytest.mark.parametrize(
    ("uid", "role", "organisation"),
    [
        ("fred", "faculty", "Computer Science"),
        ("olga", "org_admin", "Computer Science"),
        ("adam", "admin", "IT Services"),
        ("paula", "user", "Physics"),
    ],
)
def test_first_login_takes_the_role_from_the_directory_groups(directory, uid, role, organisation):
    user = login_as(directory, uid)

    assert user.role == role
    assert user.role_source == "directory"
    assert user.organisation.name == organisation
    assert user.is_directory_user is True
    assert user.is_staff is (role == "admin")


def test_login_joins_an_existing_organisation_of_that_name(directory):
    existing = Organisation.objects.create(name="Computer Science", slug="cs")

    fred = login_as(directory, "fred")
    olga = login_as(directory, "olga")

    assert fred.organisation_id == existing.pk
    assert olga.organisation_id == existing.pk
    assert Organisation.objects.filter(name="Computer Science").count() == 1


def test_directory_changes_to_name_email_and_organisation_reach_the_account_at_next_login(
    directory,
):
    login_as(directory, "alice")
    directory.set_attribute("alice", "mail", "alice.archer@example.org")
    directory.set_attribute("alice", "sn", "Archer-Smith")
    directory.set_attribute("alice", "ou", "Physics")

    alice = login_as(directory, "alice")

    assert alice.email == "alice.archer@example.org"
    assert alice.last_name == "Archer-Smith"
    assert alice.organisation.name == "Physics"
    assert User.objects.filter(username="alice").count() == 1


# ---- roles follow the directory groups ----


def test_group_change_changes_the_role_at_next_login(directory):
    assert login_as(directory, "alice").role == "user"

    directory.add_to_group("alice", "portal-faculty")
    alice = login_as(directory, "alice")
    assert alice.role == "faculty"
    assert alice.role_source == "directory"

    directory.remove_from_group("alice", "portal-faculty")
    assert login_as(directory, "alice").role == "user"


def test_the_highest_directory_group_wins(directory):
    directory.add_to_group("alice", "portal-faculty")
    directory.add_to_group("alice", "portal-admins")

    alice = login_as(directory, "alice")

    assert alice.role == "admin"
    assert alice.is_staff


def test_losing_the_admin_group_takes_admin_and_staff_away(directory):
    assert login_as(directory, "adam").is_staff
    directory.add_to_group("olga", "portal-admins")  # a groupOfNames keeps one member
    directory.remove_from_group("adam", "portal-admins")
    directory.add_to_group("adam", "portal-orgadmins")

    adam = login_as(directory, "adam")

    assert adam.role == "org_admin"
    assert adam.role_source == "directory"
    assert not adam.is_staff


def test_role_granted_in_the_portal_survives_login_unless_the_directory_grants_more(directory):
    from core.accounts.services import user_role_grant

    admin = User.objects.create_user("portal-root", password="Local-Admin-Pw-1", role="admin")
    alice = login_as(directory, "alice")

    user_role_grant(user=alice, role="faculty", actor=admin)
    alice.refresh_from_db()
    assert (alice.role, alice.role_source) == ("faculty", "portal")

    alice = login_as(directory, "alice")
    assert (alice.role, alice.role_source) == ("faculty", "portal")

    directory.add_to_group("alice", "portal-orgadmins")
    alice = login_as(directory, "alice")
    assert (alice.role, alice.role_source) == ("org_admin", "directory")


# ---- wrong passwords and hostile logins ----


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("alice", "not-her-password"),
        ("alice", "fred-Secret-2"),
        ("nobody", "alice-Secret-1"),
    ],
)
def test_wrong_password_says_so_and_creates_no_user(directory, username, password):
    client, response = login(username, password)

    assert_refused(client, response)
    assert UNAVAILABLE not in page(response)
    assert not User.objects.exists()


@pytest.mark.parametrize(
    ("username", "password_of"),
    [
        ("*", "alice"),
        ("a*", "alice"),
        ("ad*", "adam"),
        ("admin*", "adam"),
        ("paul*", "paula"),
        ("*)(uid=*", "alice"),
        ("alice)(|(uid=*", "alice"),
        ("*)(|(objectClass=*", "fred"),
        ("alice)(uid=fred", "alice"),
        ("al\\2a", "alice"),
        ("alice\x00", "alice"),
        ("\x00*", "alice"),
    ],
)
def test_filter_injection_never_logs_anyone_in(directory, username, password_of):
    client, response = login(username, directory.password_of(password_of))

    assert response.status_code == 200
    assert "_auth_user_id" not in client.session
    text = page(response)
    assert WRONG_CREDENTIALS in text or NULL_CHARACTERS in text, text[-2000:]
    assert UNAVAILABLE not in text
    assert not User.objects.exists()


# ---- the directory down or hung ----


def test_directory_stopped_says_unavailable_and_local_accounts_still_work(directory):
    User.objects.create_user("breakglass", password="Break-Glass-Pw-9", role="admin")
    client, response = login("breakglass", "Break-Glass-Pw-9")
    assert_logged_in(client, response)

    directory.stop()
    try:
        client, response = login("alice", directory.password_of("alice"))
        assert_refused(client, response, UNAVAILABLE)
        assert WRONG_CREDENTIALS not in page(response)
        assert not User.objects.filter(username="alice").exists()

        client, response = login("breakglass", "Break-Glass-Pw-9")
        assert_logged_in(client, response)
        assert client.get(reverse("dashboard")).status_code == 200

        client, response = login("breakglass", "wrong")
        assert response.status_code == 200
        assert "_auth_user_id" not in client.session
    finally:
        directory.start()

    login_as(directory, "alice")


def test_known_directory_user_gets_unavailable_not_a_stale_login_when_stopped(directory):
    alice = login_as(directory, "alice")
    alice.set_password(directory.password_of("alice"))  # a stale local copy must not count
    alice.save()

    directory.stop()
    try:
        client, response = login("alice", directory.password_of("alice"))
        assert_refused(client, response, UNAVAILABLE)
    finally:
        directory.start()


def test_hung_directory_times_out_with_unavailable(directory, settings):
    apply_ldap(settings, directory.settings(LDAP_TIMEOUT="1"))
    directory.pause()
    watchdog = threading.Timer(20, directory.resume)  # never let a missing timeout hang the run
    watchdog.start()
    try:
        started = time.monotonic()
        client, response = login("alice", directory.password_of("alice"))
        elapsed = time.monotonic() - started
    finally:
        watchdog.cancel()
        directory.resume()

    assert elapsed < 8, f"login waited {elapsed:.1f}s for a hung directory (LDAP_TIMEOUT=1)"
    assert_refused(client, response, UNAVAILABLE)


# ---- people leaving the directory ----


def test_user_deleted_from_the_directory_cannot_log_in(directory):
    login_as(directory, "alice")
    directory.delete_user("alice")

    client, response = login("alice", directory.password_of("alice"))

    assert_refused(client, response)


def test_deleted_directory_user_does_not_fall_back_to_a_stale_local_password(directory):
    alice = login_as(directory, "alice")
    alice.set_password(directory.password_of("alice"))  # e.g. left over from before LDAP
    alice.save()

    directory.delete_user("alice")
    client, response = login("alice", directory.password_of("alice"))

    assert_refused(client, response)


def test_user_disabled_in_the_directory_loses_access_at_next_login(directory):
    login_as(directory, "fred")
    directory.disable_user("fred")

    client, response = login("fred", directory.password_of("fred"))

    assert response.status_code == 200
    assert "_auth_user_id" not in client.session
    assert UNAVAILABLE not in page(response)


def test_changed_directory_password_replaces_the_old_one(directory):
    login_as(directory, "paula")
    directory.set_password("paula", "paula-New-Secret-6")

    client, response = login("paula", directory.password_of("paula"))
    assert_refused(client, response)
    client, response = login("paula", "paula-New-Secret-6")
    assert_logged_in(client, response)


# ---- StartTLS ----


def test_start_tls_with_the_test_ca_logs_in(directory, settings):
    apply_ldap(settings, directory.settings(LDAP_START_TLS="true",
                                            LDAP_CA_CERT_FILE=str(directory.ca_cert)))

    alice = login_as(directory, "alice")

    assert alice.organisation.name == "Computer Science"


def test_start_tls_with_a_wrong_ca_says_unavailable_not_wrong_password(directory, settings):
    apply_ldap(settings, directory.settings(LDAP_START_TLS="true",
                                            LDAP_CA_CERT_FILE=str(directory.other_ca_cert)))

    client, response = login("alice", directory.password_of("alice"))

    assert_refused(client, response, UNAVAILABLE)
    assert WRONG_CREDENTIALS not in page(response)
    assert not User.objects.exists()

    # The right CA works again in the same process: no TLS context is left over.
    apply_ldap(settings, directory.settings(LDAP_START_TLS="true",
                                            LDAP_CA_CERT_FILE=str(directory.ca_cert)))
    login_as(directory, "alice")


def test_start_tls_without_a_ca_file_still_checks_the_certificate(directory, settings):
    env = directory.settings(LDAP_START_TLS="true")
    del env["LDAP_CA_CERT_FILE"]
    apply_ldap(settings, env)

    client, response = login("alice", directory.password_of("alice"))

    assert_refused(client, response, UNAVAILABLE)
    assert not User.objects.exists()


# ---- the login throttle ----


def test_wrong_directory_passwords_lock_the_account_even_for_the_right_one(directory):
    from django.conf import settings

    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        client, response = login("alice", "not-her-password", Client(REMOTE_ADDR="192.0.2.1"))
        assert_refused(client, response)
    # The failure that reaches the limit already answers with the throttle's page.
    client, response = login("alice", "not-her-password", Client(REMOTE_ADDR="192.0.2.1"))
    assert response.status_code == 429
    client, response = login("alice", directory.password_of("alice"),
                             Client(REMOTE_ADDR="192.0.2.2"))
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    assert "Too many failed logins for this account or address" in page(response)
    # Another directory account from another address is untouched.
    login_as(directory, "fred")
