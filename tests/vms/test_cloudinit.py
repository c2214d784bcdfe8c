"""Fast tests of the NoCloud seed builder: read the ISO back and parse what cloud-init reads."""

from __future__ import annotations

import base64
import dataclasses
import io
import struct

import pycdlib
import pytest
import yaml
from passlib.hash import sha512_crypt

from vms.cloudinit import (
    SeedUser,
    build_seed_iso,
    hash_password,
    seed_documents,
    validate_ssh_key,
)

ED25519 = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIBdXUSkXHGC8B/XTNfziTj9cl1m9/fIy9XmIWrm1GBC sam@laptop"
)
NAMES = ("meta-data", "user-data", "network-config")


def fake_key(kind: str, size: int = 64) -> str:
    """Return a syntactically valid public key line of kind with size bytes of key material."""
    raw = struct.pack(">I", len(kind)) + kind.encode() + b"\x00" * size
    return f"{kind} {base64.b64encode(raw).decode()}"


def make_user(**changes: object) -> SeedUser:
    base = SeedUser(name="sam", password_hash=None, ssh_keys=(ED25519,), gecos="Sam Student")
    return dataclasses.replace(base, **changes)


def read_iso(data: bytes) -> tuple[pycdlib.PyCdlib, dict[str, dict[str, bytes]]]:
    """Return the opened ISO and each file's bytes by name, per naming scheme."""
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    files: dict[str, dict[str, bytes]] = {"joliet": {}, "rr": {}}
    for name in NAMES:
        for scheme, arg in (("joliet", "joliet_path"), ("rr", "rr_path")):
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, **{arg: f"/{name}"})
            files[scheme][name] = out.getvalue()
    return iso, files


def seed(**changes: object) -> bytes:
    args: dict[str, object] = {
        "instance_id": "iid-7f3a", "hostname": "web-1", "user": make_user(),
        "mac": "52:54:00:12:34:56",
    }
    args.update(changes)
    return build_seed_iso(**args)  # type: ignore[arg-type]


def user_data(data: bytes) -> dict:
    _, files = read_iso(data)
    text = files["rr"]["user-data"].decode()
    assert text.startswith("#cloud-config\n")
    return yaml.safe_load(text)


def test_seed_is_an_iso_labelled_cidata_with_the_three_nocloud_files() -> None:
    iso, files = read_iso(seed())
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"
        assert iso.joliet_vd is not None
        assert iso.joliet_vd.volume_identifier.decode("utf-16-be").strip() == "cidata"
        names = {
            child.rock_ridge.name().decode()
            for child in iso.list_children(rr_path="/")
            if child.rock_ridge is not None and child.is_file()
        }
        assert names == set(NAMES)
    finally:
        iso.close()
    assert files["joliet"] == files["rr"]


def test_meta_data_names_instance_and_hostname() -> None:
    _, files = read_iso(seed())
    assert yaml.safe_load(files["rr"]["meta-data"]) == {
        "instance-id": "iid-7f3a", "local-hostname": "web-1"}


def test_user_data_creates_a_key_only_user_with_a_locked_password() -> None:
    doc = user_data(seed())
    assert doc["hostname"] == "web-1"
    assert doc["ssh_pwauth"] is False
    assert doc["users"] == [{
        "name": "sam", "gecos": "Sam Student", "shell": "/bin/bash", "lock_passwd": True,
        "ssh_authorized_keys": [ED25519], "sudo": "ALL=(ALL) NOPASSWD:ALL",
    }]


def test_user_data_carries_the_password_hash_that_verifies() -> None:
    hashed = hash_password("correct horse battery")
    doc = user_data(seed(user=make_user(password_hash=hashed, ssh_keys=())))
    (account,) = doc["users"]
    assert account["lock_passwd"] is False
    assert account["hashed_passwd"] == hashed
    assert "ssh_authorized_keys" not in account
    assert doc["ssh_pwauth"] is True
    assert hashed.startswith("$6$")
    assert sha512_crypt.verify("correct horse battery", account["hashed_passwd"])
    assert not sha512_crypt.verify("wrong", account["hashed_passwd"])


def test_network_config_matches_the_mac_and_asks_for_dhcp() -> None:
    _, files = read_iso(seed(mac="52:54:00:AB:CD:EF"))
    assert yaml.safe_load(files["rr"]["network-config"]) == {
        "version": 2,
        "ethernets": {"eth0": {
            "match": {"macaddress": "52:54:00:ab:cd:ef"}, "set-name": "eth0", "dhcp4": True}},
    }


def test_without_a_mac_network_config_leaves_cloud_init_its_fallback() -> None:
    _, files = read_iso(seed(mac=None))
    assert yaml.safe_load(files["rr"]["network-config"]) is None


@pytest.mark.parametrize("gecos", [
    "O'Brien \"the #1\" - {x, [y]} & <b> &anchor *alias",
    "# not a comment",
    "- looks like a list item",
    "Zoë Ångström, Room 4",
    "yes",
])
def test_odd_full_names_round_trip_as_plain_text(gecos: str) -> None:
    (account,) = user_data(seed(user=make_user(gecos=gecos)))["users"]
    assert account["gecos"] == gecos


def test_key_comments_with_yaml_and_shell_characters_round_trip() -> None:
    key = ED25519.rsplit(" ", 1)[0] + " it's #1: {a} & $(reboot) `x` 'q'"
    (account,) = user_data(seed(user=make_user(ssh_keys=(key,))))["users"]
    assert account["ssh_authorized_keys"] == [key]


def test_keys_of_every_supported_type_are_accepted() -> None:
    keys = (fake_key("ssh-rsa", 300), fake_key("ecdsa-sha2-nistp256"), ED25519)
    (account,) = user_data(seed(user=make_user(ssh_keys=keys)))["users"]
    assert account["ssh_authorized_keys"] == list(keys)


def test_validate_ssh_key_trims_and_normalises_spaces() -> None:
    kind, data, comment = ED25519.split(" ")
    assert validate_ssh_key(f"  {kind}   {data}   {comment}\n") == ED25519


@pytest.mark.parametrize(("key", "message"), [
    ("", "empty"),
    ("ssh-ed25519", "<type> <base64 data>"),
    ("command=\"rm\" AAAA", "not an SSH key type"),
    ("ssh-ed25519 not*base64", "base64"),
    (ED25519 + "\nssh-ed25519 AAAA injected", "one line"),
    (ED25519 + "\rx", "one line"),
    (ED25519 + " " + "c" * 300, "comment"),
])
def test_bad_ssh_keys_are_refused_with_a_reason(key: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_ssh_key(key)
    with pytest.raises(ValueError, match=message):
        seed(user=make_user(ssh_keys=(key,)))


@pytest.mark.parametrize(("changes", "message"), [
    ({"instance_id": ""}, "instance id"),
    ({"instance_id": "iid\n1"}, "instance id"),
    ({"hostname": "Web"}, "hostname"),
    ({"hostname": "-web"}, "hostname"),
    ({"hostname": "a" * 64}, "hostname"),
    ({"hostname": "web.example"}, "hostname"),
    ({"mac": "52:54:00:12:34"}, "MAC"),
    ({"mac": "52-54-00-12-34-56"}, "MAC"),
    ({"user": make_user(name="Sam")}, "user name"),
    ({"user": make_user(name="sam;rm")}, "user name"),
    ({"user": make_user(name="root")}, "system account"),
    ({"user": make_user(name="a" * 33)}, "user name"),
    ({"user": make_user(password_hash="$1$abc$def")}, "SHA-512"),
    ({"user": make_user(password_hash="plain-text")}, "SHA-512"),
    ({"user": make_user(password_hash=None, ssh_keys=())}, "password or at least one SSH key"),
    ({"user": make_user(ssh_keys=[ED25519])}, "tuple"),
    ({"user": make_user(ssh_keys=(ED25519,) * 33)}, "at most"),
    ({"user": make_user(gecos="Sam:0:0")}, "':'"),
    ({"user": make_user(gecos="Sam\nroot::0:0::/:/bin/sh")}, "control"),
    ({"user": make_user(gecos="x" * 129)}, "at most"),
    ({"user": "sam"}, "SeedUser"),
])
def test_bad_input_is_refused_before_anything_is_built(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        seed(**changes)


def test_documents_are_the_same_as_the_iso_holds() -> None:
    docs = seed_documents(instance_id="iid-7f3a", hostname="web-1", user=make_user(),
                          mac="52:54:00:12:34:56")
    _, files = read_iso(seed())
    assert {name: data.decode() for name, data in files["rr"].items()} == docs


def test_hash_password_refuses_empty_and_control_characters() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        hash_password("")
    with pytest.raises(ValueError, match="control"):
        hash_password("pass\nword")
