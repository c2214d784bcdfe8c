"""Load the demo: one organisation, an account per role, this machine as a host, a template."""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from core.accounts.models import Organisation, Role, User
from hosts.guest_image import GuestImageError, ensure_guest_image
from hosts.models import Datastore, Host, Template
from hosts.virt import Hypervisor
from networking.models import VLAN, PublicIP, SecurityDomain
from networking.ranges import private_range_add, public_range_add
from operations.models import Operation, OperationKind, OperationStatus
from operations.runner import operation_run

ACCOUNTS = [
    ("student", Role.USER, "Sam", "Student"),
    ("faculty", Role.FACULTY, "Farah", "Faculty"),
    ("orgadmin", Role.ORG_ADMIN, "Omar", "Orgadmin"),
    ("admin", Role.ADMIN, "Ada", "Admin"),
]
TEMPLATE = "Tiny demo guest"
# The guest boots and runs SSH in 128 MiB with about 45 MiB to spare.
TEMPLATE_FIELDS = {
    "os_name": "Tiny Linux (Debian kernel, busybox, dropbear)", "cloud_init": True,
    "min_vcpus": 1, "max_vcpus": 2, "min_memory_mib": 128, "max_memory_mib": 1024,
    "min_disk_gib": 1, "max_disk_gib": 8,
}  # fmt: skip
LAB_NETWORK = "portal-lab"
LAB_SUBNET = "10.77.0.0/24"


def dynamic_range(subnet: ipaddress.IPv4Network,
                  pool_first: ipaddress.IPv4Address) -> tuple[str, str]:
    """Return the dynamic DHCP range left to libvirt: from .2 (.1 is its own) up to the pool.

    The portal gives each VM a static DHCP entry from its pool, and ranges an admin adds later
    go above it; a dynamic lease of one of those addresses to another guest would clash.
    """
    start = subnet.network_address + 2
    end = pool_first - 1
    if end < start:
        raise CommandError(f"The pool of {subnet} leaves no room for libvirt's dynamic DHCP "
                           "range below it; give a later --first-ip.")
    return str(start), str(end)


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
        parser.add_argument(
            "--guest-cache", default=os.environ.get("PORTAL_GUEST_CACHE", ""),
            help="Folder where the demo guest is built and cached (default VAR_DIR/guest-cache).")

    def handle(self, *args: object, **opts: object) -> None:
        """Create each part of the demo unless it exists."""
        org, _ = Organisation.objects.get_or_create(
            slug="cse", defaults={"name": "Department of Computer Science"})
        passwords = self._accounts(org)
        datastore_dir = settings.VAR_DIR / "datastore"
        datastore_dir.mkdir(parents=True, exist_ok=True)
        datastore_dir.chmod(0o755)
        image = self._guest_image(Path(opts["guest_cache"] or settings.VAR_DIR / "guest-cache"),
                                  datastore_dir)
        with transaction.atomic():
            host, _ = Host.objects.get_or_create(uri=opts["uri"], defaults={"name": "local"})
            ds, _ = Datastore.objects.get_or_create(name=opts["datastore_name"],
                                                    defaults={"path": str(datastore_dir)})
            ds.hosts.add(host)
            template, created = Template.objects.get_or_create(name=TEMPLATE, defaults={
                "datastore": ds, "image": image, **TEMPLATE_FIELDS})
            if not created and template.image != image:
                # A newer guest build: new VMs use it, existing ones keep their old base file.
                for field, value in {"image": image, **TEMPLATE_FIELDS}.items():
                    setattr(template, field, value)
                template.full_clean()
                template.save()
            self._pool(opts, org)
        self._lab_network(host.uri)
        self._dynamic_ranges(host.uri)
        op = Operation.objects.create(kind=OperationKind.HOST_REFRESH, host=host)
        op = operation_run(operation_id=op.pk)
        if op.status != OperationStatus.SUCCEEDED:
            raise CommandError(f"Could not read host {host.uri}: {op.message}")
        self.stdout.write(op.message)
        self._write_accounts(passwords)

    def _guest_image(self, cache: Path, datastore_dir: Path) -> str:
        """Build (or reuse) the demo guest and return its file name in the datastore."""
        try:
            built = ensure_guest_image(cache)
        except GuestImageError as exc:
            raise CommandError(f"Could not build the demo guest: {exc}") from None
        target = datastore_dir / built.name
        if not target.exists():
            # Copy under a temporary name: a half-copied base image must never be used.
            partial = datastore_dir / f".{built.name}.tmp"
            shutil.copyfile(built, partial)
            partial.chmod(0o644)
            os.replace(partial, target)
            self.stdout.write(f"Made the template image {target}")
        return built.name

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

    def _pool(self, opts: dict, org: Organisation) -> None:
        net = ipaddress.IPv4Network(opts["subnet"])
        campus, created = VLAN.objects.get_or_create(name="campus", defaults={
            "tag": 10, "subnet": str(net), "gateway": str(next(net.hosts())),
            "network_name": opts["network"]})
        if created:
            first = ipaddress.IPv4Address(opts["first_ip"])
            private_range_add(vlan=campus, first=str(first),
                              last=str(first + opts["count"] - 1))
        lab, created = VLAN.objects.get_or_create(name="lab", defaults={
            "tag": 20, "subnet": LAB_SUBNET, "gateway": "10.77.0.1",
            "network_name": LAB_NETWORK})
        if created:
            private_range_add(vlan=lab, first="10.77.0.100", last="10.77.0.149")
        for name, vlan, text in (
            ("Research", campus, "Campus network with a route to the outside"),
            ("Teaching lab", lab, "Isolated lab network, no route out"),
        ):
            domain, _ = SecurityDomain.objects.get_or_create(
                name=name, defaults={"vlan": vlan, "description": text})
            domain.organisations.add(org)
        if not PublicIP.objects.exists():
            # Documentation addresses: the demo has no NAT box, so they are only recorded.
            public_range_add(first="203.0.113.10", last="203.0.113.19")

    def _lab_network(self, uri: str) -> None:
        """Make the isolated libvirt network the demo's lab VLAN lives on."""
        root = ET.Element("network")
        ET.SubElement(root, "name").text = LAB_NETWORK
        ET.SubElement(root, "bridge", name="virbr-lab", stp="on", delay="0")
        ip = ET.SubElement(root, "ip", address="10.77.0.1", netmask="255.255.255.0")
        dhcp = ET.SubElement(ip, "dhcp")
        start, end = dynamic_range(ipaddress.IPv4Network(LAB_SUBNET),
                                   ipaddress.IPv4Address("10.77.0.100"))
        ET.SubElement(dhcp, "range", start=start, end=end)
        Hypervisor(uri).ensure_network(ET.tostring(root, encoding="unicode"))

    def _dynamic_ranges(self, uri: str) -> None:
        """Keep each demo network's dynamic DHCP range out of the VLAN's address pool."""
        hv = Hypervisor(uri)
        for vlan in VLAN.objects.filter(name__in=("campus", "lab")).exclude(network_name=""):
            addresses = vlan.addresses.values_list("address", flat=True)
            if not addresses:
                continue
            first = min(ipaddress.IPv4Address(a) for a in addresses)
            start, end = dynamic_range(vlan.network, first)
            hv.network_dhcp_range_set(vlan.network_name, start, end)
            self.stdout.write(f"Network {vlan.network_name}: dynamic DHCP {start}-{end}, "
                              f"outside the pool of VLAN {vlan.name}")
