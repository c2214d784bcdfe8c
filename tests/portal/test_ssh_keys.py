"""SSH public keys in a profile: checked with paramiko, kept per owner, shown to nobody else."""

from __future__ import annotations

import base64
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from django.core.exceptions import ValidationError
from django.urls import reverse

from core.accounts.keys import parse_public_key
from core.accounts.models import SSHKey
from core.accounts.services import ssh_key_add


def openssh_line(private_key, comment: str = "") -> str:
    line = private_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{line} {comment}".strip()


def ed25519_line(comment: str = "alice@laptop") -> str:
    return openssh_line(ed25519.Ed25519PrivateKey.generate(), comment)


def rsa_line(bits: int, comment: str = "") -> str:
    return openssh_line(rsa.generate_private_key(public_exponent=65537, key_size=bits), comment)


@pytest.mark.parametrize(("make", "key_type", "bits"), [
    (lambda: ed25519.Ed25519PrivateKey.generate(), "ssh-ed25519", 256),
    (lambda: ec.generate_private_key(ec.SECP256R1()), "ecdsa-sha2-nistp256", 256),
    (lambda: ec.generate_private_key(ec.SECP384R1()), "ecdsa-sha2-nistp384", 384),
    (lambda: ec.generate_private_key(ec.SECP521R1()), "ecdsa-sha2-nistp521", 521),
    (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "ssh-rsa", 2048),
    (lambda: rsa.generate_private_key(public_exponent=65537, key_size=3072), "ssh-rsa", 3072),
])
def test_accepts_each_allowed_key_type_with_its_size(make, key_type, bits, tmp_path):
    line = openssh_line(make(), "me@work")
    key = parse_public_key(f"  {line}\n")
    assert (key.key_type, key.bits, key.comment) == (key_type, bits, "me@work")
    assert key.line == line
    # The fingerprint is the one `ssh-keygen -l` prints.
    (tmp_path / "k.pub").write_text(line + "\n")
    shown = subprocess.run(["ssh-keygen", "-l", "-f", str(tmp_path / "k.pub")],
                           capture_output=True, text=True, check=True).stdout.split()[1]
    assert key.fingerprint == shown


def test_a_key_without_comment_is_accepted():
    key = parse_public_key(ed25519_line(comment=""))
    assert key.comment == "" and key.line.count(" ") == 1


@pytest.mark.parametrize(("text", "says"), [
    ("", "Paste your public key"),
    ("ssh-ed25519 AAAA$$notbase64 me", "not valid base64"),
    ("ssh-ed25519", "key data after the type is missing"),
    ("ssh-ed25519 " + base64.b64encode(b"\x00\x00\x00\x07ssh-rsa" + b"x" * 40).decode(),
     "damaged or is not a ssh-ed25519 key"),
    ("ssh-ed25519 " + base64.b64encode(b"garbage").decode(), "damaged"),
    ("sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAI", "not accepted"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----", "private key"),
])
def test_refuses_bad_input_with_a_clear_message(text, says):
    with pytest.raises(ValidationError) as exc:
        parse_public_key(text)
    assert says in " ".join(exc.value.messages)


@pytest.mark.filterwarnings("ignore:SSH DSA key support")
def test_refuses_dsa_keys():
    line = openssh_line(dsa.generate_private_key(key_size=1024))  # noqa: S505 - refused here
    assert line.startswith("ssh-dss ")
    with pytest.raises(ValidationError, match="DSA keys are refused"):
        parse_public_key(line)


def test_refuses_rsa_keys_shorter_than_2048_bits():
    with pytest.raises(ValidationError, match="1024 bits; at least 2048"):
        parse_public_key(rsa_line(1024))


def test_refuses_an_options_prefix():
    with pytest.raises(ValidationError, match="Remove the options"):
        parse_public_key(f'command="/bin/sh",no-pty {ed25519_line()}')
    with pytest.raises(ValidationError, match="Remove the options"):
        parse_public_key(f"no-port-forwarding {ed25519_line()}")


def test_refuses_two_lines():
    with pytest.raises(ValidationError, match="one key on one line"):
        parse_public_key(f"{ed25519_line()}\n{ed25519_line()}")


def test_refuses_a_comment_with_control_characters():
    with pytest.raises(ValidationError, match="printable text"):
        parse_public_key(ed25519_line(comment="me\x1b[31m"))


@pytest.mark.django_db
def test_a_comment_with_html_is_kept_and_shown_escaped(site):
    comment = '<script>alert("x")</script>'
    key = ssh_key_add(owner=site.student, name="", public_key=ed25519_line(comment=comment))
    assert key.public_key.endswith(comment) and key.name == comment
    page = site.client(site.student).get(reverse("accounts:ssh_key_list")).content.decode()
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


@pytest.mark.django_db
def test_the_same_key_twice_is_refused_for_one_user_but_not_across_users(site):
    line = ed25519_line()
    ssh_key_add(owner=site.student, name="laptop", public_key=line)
    with pytest.raises(ValidationError, match="already have this key"):
        ssh_key_add(owner=site.student, name="again", public_key=line.rsplit(" ", 1)[0])
    ssh_key_add(owner=site.other_student, name="shared", public_key=line)
    assert SSHKey.objects.count() == 2


@pytest.mark.django_db
def test_adding_a_key_through_the_page(site):
    client = site.client(site.student)
    response = client.post(reverse("accounts:ssh_key_list"),
                           {"name": "laptop", "public_key": ed25519_line()})
    assert response.status_code == 302
    key = SSHKey.objects.get(owner=site.student)
    assert key.name == "laptop" and key.key_type == "ssh-ed25519"
    page = client.get(reverse("accounts:ssh_key_list")).content.decode()
    assert key.fingerprint in page and "laptop" in page


@pytest.mark.django_db
def test_a_bad_key_gets_a_form_error_and_nothing_is_kept(site):
    response = site.client(site.student).post(
        reverse("accounts:ssh_key_list"), {"name": "old", "public_key": rsa_line(1024)})
    assert response.status_code == 200
    assert "at least 2048" in response.content.decode()
    assert not SSHKey.objects.exists()


@pytest.mark.django_db
def test_owner_deletes_a_key_another_user_gets_404(site):
    key = ssh_key_add(owner=site.student, name="laptop", public_key=ed25519_line())
    url = reverse("accounts:ssh_key_delete", args=[key.pk])
    for intruder in (site.other_student, site.admin, site.orgadmin):
        assert site.client(intruder).post(url).status_code == 404
    assert site.client(site.student).get(url).status_code == 405
    assert SSHKey.objects.filter(pk=key.pk).exists()
    assert site.client(site.student).post(url).status_code == 302
    assert not SSHKey.objects.filter(pk=key.pk).exists()


@pytest.mark.django_db
def test_nobody_else_sees_a_users_keys(site):
    key = ssh_key_add(owner=site.student, name="laptop-key", public_key=ed25519_line())
    page = site.client(site.admin).get(reverse("accounts:ssh_key_list")).content.decode()
    assert key.fingerprint not in page and "laptop-key" not in page


@pytest.mark.django_db
def test_the_user_menu_links_to_the_keys(site):
    page = site.client(site.student).get(reverse("dashboard")).content.decode()
    assert reverse("accounts:ssh_key_list") in page
