"""How an owner logs in to their VM: the login user, SSH keys and generated password.

They reach the guest through a cloud-init NoCloud seed, a small ISO volume next to the
VM's disk attached as a read-only CD-ROM. Only the password's hash is kept; its clear
text waits for its owner to see it once.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

from django.db import transaction

from core.accounts.models import SSHKey, User
from core.errors import PortalError
from core.validators import free_text_clean
from hosts.virt import Hypervisor

from ..cloudinit import RESERVED_USER_NAMES, USER_NAME_RE, SeedUser, build_seed_iso, hash_password
from ..models import VirtualMachine

FALLBACK_LOGIN = "portal"
# Group names every Debian or Ubuntu image has: a user of that name would collide with them.
_SYSTEM_GROUPS = frozenset({
    "adm", "admin", "audio", "cdrom", "crontab", "dialout", "dip", "disk", "docker", "fax",
    "floppy", "input", "kmem", "kvm", "lxd", "netdev", "operator", "plugdev", "render",
    "sasl", "shadow", "src", "ssh", "staff", "sudo", "tape", "tty", "users", "utmp", "video",
    "voice", "wheel", "dropbear", "ubuntu", "debian", "cloud-user", "halt", "shutdown", "ftp",
})  # fmt: skip
# Easy to read aloud and to type on a console: no o/0, l/1, and one case.
_READABLE_CHARS = "abcdefghijkmnpqrstuvwxyz23456789"
_PASSWORD_GROUPS, _PASSWORD_GROUP_LENGTH = 4, 5  # 23 characters, about 100 bits


def login_name_for(username: str) -> str:
    """Return a valid Linux login made from a portal username, else 'portal'."""
    name = username.split("@", 1)[0].lower()
    name = re.sub(r"[^a-z0-9_-]+", "-", name).strip("-")
    name = re.sub(r"^[0-9-]+", "", name)[:32].rstrip("-")
    if (not name or not USER_NAME_RE.fullmatch(name) or name in RESERVED_USER_NAMES
            or name in _SYSTEM_GROUPS or name.startswith("systemd-")):
        return FALLBACK_LOGIN
    return name


def generate_password() -> str:
    """Return a random password of four groups of five easily read characters."""
    return "-".join(
        "".join(secrets.choice(_READABLE_CHARS) for _ in range(_PASSWORD_GROUP_LENGTH))
        for _ in range(_PASSWORD_GROUPS)
    )


def key_snapshot(keys: Iterable[SSHKey]) -> list[dict[str, str]]:
    """Return what a request or VM keeps of the chosen keys, should they leave the profile."""
    return [{"name": k.name, "fingerprint": k.fingerprint, "public_key": k.public_key}
            for k in keys]


def takes_credentials(vm: VirtualMachine) -> bool:
    """Return whether the VM gets a seed: a cloud-init template and a key or password."""
    return vm.template.cloud_init and bool(vm.login_keys or vm.password_hash)


def password_prepare(vm: VirtualMachine) -> None:
    """Generate the VM's password once if its request asked for one."""
    request = vm.request
    if (vm.password_hash or request is None or not request.generate_password
            or not vm.template.cloud_init):
        return
    password = generate_password()
    vm.password_hash = hash_password(password)
    vm.password_once = password
    vm.save(update_fields=["password_hash", "password_once"])


def seed_build(vm: VirtualMachine, mac: str | None) -> bytes:
    """Return the NoCloud seed of the VM: its own instance-id and hostname, its user and keys."""
    user = SeedUser(
        name=vm.login_user or FALLBACK_LOGIN,
        password_hash=vm.password_hash or None,
        ssh_keys=tuple(k["public_key"] for k in vm.login_keys),
        # The owner's name comes from the directory or an admin, not from this request: it
        # is carried without what a passwd line cannot hold rather than failing the install.
        gecos=" ".join(free_text_clean(vm.owner.get_full_name()).replace(":", " ").split())[:128],
    )
    try:
        return build_seed_iso(instance_id=str(vm.uuid), hostname=vm.name, user=user, mac=mac)
    except ValueError as exc:
        raise PortalError(f"The login details of {vm.name} cannot be written: {exc}.") from exc


def seed_upload(vm: VirtualMachine, hv: Hypervisor, pool: str, mac: str | None) -> str:
    """Build the VM's seed and store it as a volume in pool; return its path."""
    return hv.upload_volume(pool, vm.seed_volume_name, seed_build(vm, mac))


def vm_password_reveal(*, vm: VirtualMachine, actor: User) -> str:
    """Return the VM's generated password to its owner once; afterwards only the hash stays."""
    if not actor.has_perm("vms.view_vm_password", vm):
        raise PortalError(f"Only the owner of {vm.name} sees its password.")
    with transaction.atomic():
        locked = VirtualMachine.objects.select_for_update().get(pk=vm.pk)
        password = locked.password_once
        if not password:
            raise PortalError(f"The password of {locked.name} was already shown; it is not "
                              "kept, so it cannot be shown again.")
        locked.password_once = ""
        locked.save(update_fields=["password_once"])
    return password
