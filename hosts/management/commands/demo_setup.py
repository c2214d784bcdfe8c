"""Load the demo: one organisation, an account per role, this machine as a host, a template."""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from hosts.demo_image import build_template_image
from hosts.models import Datastore, Host, Template
from networking.models import VLAN, PrivateIP
from portal.accounts.models import Organisation, Role, User
from vms.models import Operation, OperationKind, OperationStatus
from vms.services.operations import operation_run

ACCOUNTS = [
    ("student", Role.USER, "Sam", "Student"),
    ("faculty", Role.FACULTY, "Farah", "Faculty"),
    ("orgadmin", Role.ORG_ADMIN, "Omar", "Orgadmin"),
    ("admin", Role.ADMIN, "Ada", "Admin"),
]
IMAGE = "demo-tiny.qcow2"


class Command(BaseCommand):
    """Create the demo data; running it again keeps what is there."""

    help = __doc__

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        """Take the host URI and the network to use."""
        parser.add_argument("--uri", default=os.environ.get("PORTAL_DEMO_HOST_URI",
                                                            "qemu:///system"))
        parser.add_argument("--datastore-name", default="local",
                            help="Datastore name; its libvirt pool is portal-NAME.")
        parser.add_argument("--network", default="default")
        parser.add_argument("--subnet", default="192.168.122.0/24")
        parser.add_argument("--first-ip", default="192.168.122.100")
        parser.add_argument("--count", type=int, default=50)

    def handle(self, *args: object, **opts: object) -> None:
        """Create each part of the demo unless it exists."""
        org, _ = Organisation.objects.get_or_create(
            slug="cse", defaults={"name": "Department of Computer Science"})
        passwords = self._accounts(org)
        datastore_dir = settings.VAR_DIR / "datastore"
        datastore_dir.mkdir(parents=True, exist_ok=True)
        datastore_dir.chmod(0o755)
        image = datastore_dir / IMAGE
        if not image.exists():
            build_template_image(image, "VM portal demo guest: this tiny machine only boots.")
            self.stdout.write(f"Made the template image {image}")
        with transaction.atomic():
            host, _ = Host.objects.get_or_create(uri=opts["uri"], defaults={"name": "local"})
            ds, _ = Datastore.objects.get_or_create(name=opts["datastore_name"],
                                                    defaults={"path": str(datastore_dir)})
            ds.hosts.add(host)
            Template.objects.get_or_create(name="Tiny demo guest", defaults={
                "datastore": ds, "image": IMAGE, "os_name": "Boot-sector demo",
                "min_vcpus": 1, "max_vcpus": 2, "min_memory_mib": 64, "max_memory_mib": 1024,
                "min_disk_gib": 1, "max_disk_gib": 8,
            })
            self._pool(opts)
        op = Operation.objects.create(kind=OperationKind.HOST_REFRESH, host=host)
        op = operation_run(operation_id=op.pk)
        if op.status != OperationStatus.SUCCEEDED:
            raise CommandError(f"Could not read host {host.uri}: {op.message}")
        self.stdout.write(op.message)
        self._write_accounts(passwords)

    def _accounts(self, org: Organisation) -> dict[str, str]:
        path = settings.VAR_DIR / "demo-accounts.txt"
        known = {}
        if path.exists():
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 3 and parts[0] != "username":
                    known[parts[0]] = parts[2]
        passwords = {}
        for username, role, first, last in ACCOUNTS:
            user, created = User.objects.get_or_create(username=username, defaults={
                "role": role, "organisation": org, "first_name": first, "last_name": last,
                "email": f"{username}@example.org",
                "is_staff": role == Role.ADMIN, "is_superuser": role == Role.ADMIN,
            })
            password = known.get(username) if not created else None
            if password is None:
                password = f"demo-{secrets.token_urlsafe(8)}"
                user.set_password(password)
                user.save()
            passwords[username] = password
        return passwords

    def _write_accounts(self, passwords: dict[str, str]) -> None:
        path: Path = settings.VAR_DIR / "demo-accounts.txt"
        roles = {u: r.label for u, r, _, _ in ACCOUNTS}
        lines = [f"{'username':<10} {'role':<10} password"]
        lines += [f"{u:<10} {roles[u]:<10} {p}" for u, p in passwords.items()]
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        self.stdout.write("Demo accounts:\n" + "\n".join(lines))

    def _pool(self, opts: dict) -> None:
        net = ipaddress.IPv4Network(opts["subnet"])
        vlan, _ = VLAN.objects.get_or_create(name="campus", defaults={
            "tag": 10, "subnet": str(net), "gateway": str(next(net.hosts())),
            "network_name": opts["network"]})
        first = ipaddress.IPv4Address(opts["first_ip"])
        for i in range(opts["count"]):
            addr = first + i
            if addr not in net:
                break
            mac = "52:54:00:" + ":".join(f"{b:02x}" for b in addr.packed[1:])
            PrivateIP.objects.get_or_create(address=str(addr),
                                            defaults={"vlan": vlan, "mac": mac})
