"""Build cloud-init NoCloud seeds: a `cidata` ISO 9660 image with meta-data and user-data.

Pure Python (pycdlib, PyYAML, libpass); no Django, no libvirt. The seed is standard: any
image that runs cloud-init reads it, and the portal's tiny demo guest reads the same keys.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass

import pycdlib
import yaml
from passlib.hash import sha512_crypt

VOLUME_LABEL = "cidata"
DEFAULT_SHELL = "/bin/bash"
SUDO_RULE = "ALL=(ALL) NOPASSWD:ALL"

INSTANCE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
HOSTNAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
USER_NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# SHA-512 crypt(3): optional rounds, a salt of up to 16 characters, an 86-character digest.
PASSWORD_HASH_RE = re.compile(
    r"^\$6\$(rounds=[1-9][0-9]{3,8}\$)?[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{86}$"
)
# Accounts every Linux image already has; seeding one of them would change a system account.
RESERVED_USER_NAMES = frozenset({
    "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp",
    "proxy", "www-data", "backup", "list", "irc", "gnats", "nobody", "sshd", "messagebus",
    "_apt", "systemd-network", "systemd-resolve", "systemd-timesync", "polkitd",
})  # fmt: skip
# The key's policy (types, sizes) is the profile's, in core.accounts.keys; the seed only
# makes sure each key stays one well-formed authorized_keys line.
SSH_KEY_TYPE_RE = re.compile(r"^[a-z][a-z0-9.@-]{2,63}$")
MAX_SSH_KEYS = 32
MAX_SSH_KEY_CHARS = 16 * 1024
MAX_GECOS_CHARS = 128
MAX_COMMENT_CHARS = 256
# Control characters end an authorized_keys line or a passwd field early; refuse them anywhere.
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


@dataclass(frozen=True)
class SeedUser:
    """The one account a seed creates: name, optional password hash, SSH keys, full name."""

    name: str
    password_hash: str | None
    ssh_keys: tuple[str, ...]
    gecos: str = ""


def hash_password(password: str) -> str:
    """Return the SHA-512 crypt(3) hash of password, as cloud-init's hashed_passwd takes it."""
    if not isinstance(password, str) or not password:
        raise ValueError("the password must be non-empty text")
    if _CONTROL_RE.search(password):
        raise ValueError("the password must not contain control characters")
    return sha512_crypt.using(rounds=5000).hash(password)


def validate_ssh_key(key: object) -> str:
    """Return key as one clean authorized_keys line, or raise ValueError saying what is wrong."""
    if not isinstance(key, str):
        raise ValueError("an SSH key must be text")
    text = key.strip()
    if not text:
        raise ValueError("an SSH key must not be empty")
    if len(text) > MAX_SSH_KEY_CHARS:
        raise ValueError(f"an SSH key must be at most {MAX_SSH_KEY_CHARS} characters")
    if _CONTROL_RE.search(text):
        raise ValueError("an SSH key must be one line without control characters")
    parts = text.split(None, 2)
    if len(parts) < 2:
        raise ValueError("an SSH key reads '<type> <base64 data> [comment]'")
    kind, data = parts[0], parts[1]
    comment = parts[2] if len(parts) == 3 else ""
    if not SSH_KEY_TYPE_RE.fullmatch(kind):
        raise ValueError(f"{kind[:40]!r} is not an SSH key type")
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the SSH key's data is not valid base64") from None
    if len(comment) > MAX_COMMENT_CHARS:
        raise ValueError(f"the SSH key's comment must be at most {MAX_COMMENT_CHARS} characters")
    return " ".join(p for p in (kind, data, comment) if p)


def _check(what: str, value: object, pattern: re.Pattern[str], hint: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"invalid {what} {value!r}: {hint}")
    return value


def _check_user(user: object) -> SeedUser:
    if not isinstance(user, SeedUser):
        raise ValueError("user must be a SeedUser")
    _check("user name", user.name, USER_NAME_RE,
           "use 1 to 32 lower-case letters, digits, '_' or '-', starting with a letter or '_'")
    if user.name in RESERVED_USER_NAMES:
        raise ValueError(f"the user name {user.name!r} belongs to a system account")
    if user.password_hash is not None:
        _check("password hash", user.password_hash, PASSWORD_HASH_RE,
               "give a SHA-512 crypt hash ($6$...)")
    if not isinstance(user.ssh_keys, tuple):
        raise ValueError("ssh_keys must be a tuple of keys")
    if len(user.ssh_keys) > MAX_SSH_KEYS:
        raise ValueError(f"at most {MAX_SSH_KEYS} SSH keys fit in a seed")
    if user.password_hash is None and not user.ssh_keys:
        raise ValueError("the user needs a password or at least one SSH key to log in")
    if not isinstance(user.gecos, str):
        raise ValueError("gecos must be text")
    if len(user.gecos) > MAX_GECOS_CHARS:
        raise ValueError(f"the full name must be at most {MAX_GECOS_CHARS} characters")
    # ':' separates /etc/passwd fields and useradd refuses it; control characters end lines.
    if ":" in user.gecos or _CONTROL_RE.search(user.gecos):
        raise ValueError("the full name must not contain ':' or control characters")
    return user


def _dump(data: object) -> str:
    # No line folding: a key stays on one line for the simplest readers, as authorized_keys.
    return yaml.safe_dump(
        data, default_flow_style=False, sort_keys=False, allow_unicode=True, width=1 << 30
    )


def seed_documents(
    *, instance_id: str, hostname: str, user: SeedUser, mac: str | None = None
) -> dict[str, str]:
    """Return the seed's files (meta-data, user-data, network-config) as text by name."""
    _check("instance id", instance_id, INSTANCE_ID_RE,
           "use 1 to 128 letters, digits, '.', '_' or '-'")
    _check("hostname", hostname, HOSTNAME_RE,
           "use 1 to 63 lower-case letters, digits or '-', not starting with '-'")
    user = _check_user(user)
    if mac is not None:
        mac = _check("MAC address", mac.lower() if isinstance(mac, str) else mac, MAC_RE,
                     "use six hex pairs joined by ':'")
    keys = [validate_ssh_key(key) for key in user.ssh_keys]

    account: dict[str, object] = {"name": user.name}
    if user.gecos:
        account["gecos"] = user.gecos
    account["shell"] = DEFAULT_SHELL
    account["lock_passwd"] = user.password_hash is None
    if user.password_hash is not None:
        account["hashed_passwd"] = user.password_hash
    if keys:
        account["ssh_authorized_keys"] = keys
    # Key-only accounts know no password, so sudo must not ask for one.
    account["sudo"] = SUDO_RULE
    user_data = {
        "hostname": hostname,
        "preserve_hostname": False,
        "users": [account],
        "ssh_pwauth": user.password_hash is not None,
    }
    if mac is not None:
        network = _dump({"version": 2, "ethernets": {"eth0": {
            "match": {"macaddress": mac}, "set-name": "eth0", "dhcp4": True}}})
    else:
        # An empty document lets cloud-init apply its fallback: DHCP on the first NIC.
        network = "# DHCP on the first network interface (cloud-init's fallback)\n"
    return {
        "meta-data": _dump({"instance-id": instance_id, "local-hostname": hostname}),
        "user-data": "#cloud-config\n" + _dump(user_data),
        "network-config": network,
    }


def build_seed_iso(
    *, instance_id: str, hostname: str, user: SeedUser, mac: str | None = None
) -> bytes:
    """Return a NoCloud seed ISO (label cidata) for one VM; raise ValueError on bad input."""
    documents = seed_documents(instance_id=instance_id, hostname=hostname, user=user, mac=mac)
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=VOLUME_LABEL)
    try:
        for name, text in documents.items():
            data = text.encode("utf-8")
            short = name.replace("-", "").upper()[:8]
            iso.add_fp(io.BytesIO(data), len(data), f"/{short}.;1",
                       rr_name=name, joliet_path=f"/{name}")
        out = io.BytesIO()
        iso.write_fp(out)
    finally:
        iso.close()
    return out.getvalue()
