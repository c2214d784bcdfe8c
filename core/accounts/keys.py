"""Check SSH public keys people paste into their profile, with paramiko."""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from paramiko.pkey import PKey, PublicBlob
from paramiko.ssh_exception import SSHException

ALLOWED_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
)
MIN_RSA_BITS = 2048
MAX_LINE = 8192  # a 16384-bit RSA key is about 2,800 characters
MAX_COMMENT = 100
_REFUSED = {
    "ssh-dss": "DSA keys are refused: they are weak and OpenSSH no longer accepts them. "
               "Use an ed25519 key (ssh-keygen -t ed25519).",
}


@dataclass(frozen=True)
class PublicKey:
    """One checked public key: its type, data, comment, size and fingerprint."""

    key_type: str
    data: str  # the base64 blob, as pasted
    comment: str
    bits: int
    fingerprint: str  # SHA256:..., as `ssh-keygen -l` prints it

    @property
    def line(self) -> str:
        """Return the key as one authorized_keys line, without options."""
        return " ".join(part for part in (self.key_type, self.data, self.comment) if part)


def fingerprint_of(blob: bytes) -> str:
    """Return the SHA256 fingerprint of a key blob, as `ssh-keygen -l` prints it."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def parse_public_key(text: str) -> PublicKey:
    """Return the checked key of one OpenSSH public key line; raise ValidationError if unfit."""
    line = (text or "").strip()
    if not line:
        raise ValidationError("Paste your public key, e.g. the contents of ~/.ssh/id_ed25519.pub.")
    if "\n" in line or "\r" in line:
        raise ValidationError("Paste one key on one line; add more keys one at a time.")
    if len(line) > MAX_LINE:
        raise ValidationError(f"The key is longer than {MAX_LINE} characters.")
    if line.startswith("-----") or line.startswith("PuTTY-User-Key-File"):
        raise ValidationError("This is a private key or another format. Paste the public "
                              "key line instead (the .pub file), and keep the private key "
                              "to yourself.")
    fields = line.split(None, 2)
    key_type = fields[0]
    if key_type in _REFUSED:
        raise ValidationError(_REFUSED[key_type])
    if key_type not in ALLOWED_TYPES:
        if any(f" {t} " in f" {line} " for t in (*ALLOWED_TYPES, *_REFUSED)):
            raise ValidationError("Remove the options before the key type: give only the "
                                  "type, the key data and an optional comment.")
        raise ValidationError(f"Key type '{key_type[:40]}' is not accepted; use one of "
                              f"{', '.join(ALLOWED_TYPES)}.")
    if len(fields) < 2:
        raise ValidationError("The key data after the type is missing.")
    data, comment = fields[1], fields[2].strip() if len(fields) > 2 else ""
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("The key data is not valid base64; copy the whole line "
                              "again.") from None
    if comment and (len(comment) > MAX_COMMENT or not comment.isprintable()):
        raise ValidationError(f"The comment after the key must be printable text of at most "
                              f"{MAX_COMMENT} characters.")
    try:
        parsed = PublicBlob.from_string(f"{key_type} {data}")
        key = PKey.from_type_string(parsed.key_type, parsed.key_blob)
        bits = int(key.get_bits())
    except (SSHException, ValueError, TypeError, IndexError, AttributeError):
        # paramiko raises several types on damaged data; all mean the same to the user.
        raise ValidationError(f"The key data is damaged or is not a {key_type} key; copy "
                              "the whole line again.") from None
    if key_type == "ssh-rsa" and bits < MIN_RSA_BITS:
        raise ValidationError(f"This RSA key has {bits} bits; at least {MIN_RSA_BITS} are "
                              "needed. Make a new one with ssh-keygen -t ed25519.")
    return PublicKey(key_type=key_type, data=data, comment=comment, bits=bits,
                     fingerprint=fingerprint_of(blob))
