"""Hypervisor hosts, the datastores their disks live on, and the templates VMs start from."""

from __future__ import annotations

from pathlib import PurePosixPath

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils.dateparse import parse_datetime

from core.accounts.predicates import is_portal_admin
from hosts.virt.domain_xml import CPU_CUSTOM_PREFIX, CPU_HOST_MODES, check_cpu_mode
from hosts.virt.images import datastore_path_problem, image_name_problem

NAME_VALIDATOR = RegexValidator(
    r"^[a-z][a-z0-9-]{0,62}\Z",
    "Use 1 to 63 lower-case letters, digits and hyphens, starting with a letter.",
)


def validate_cpu_mode(value: str) -> None:
    """Refuse a CPU mode the portal cannot write into a domain."""
    try:
        check_cpu_mode(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def validate_datastore_path(value: str) -> None:
    """Refuse a datastore directory outside the configured roots, odd or through a symlink."""
    problem = datastore_path_problem(value, settings.PORTAL_DATASTORE_ROOTS)
    if problem:
        raise ValidationError(problem, code="datastore_path")


def validate_image_name(value: str) -> None:
    """Refuse an image file name that is not a plain name inside its datastore."""
    problem = image_name_problem(value)
    if problem:
        raise ValidationError(problem, code="image_name")


class AccelPin(models.TextChoices):
    """The acceleration an administrator may pin a host to."""

    KVM = "kvm", "KVM"
    QEMU = "qemu", "TCG (no KVM)"


class HostStatus(models.TextChoices):
    """Whether a host takes new VMs."""

    UP = "up", "Up"
    DOWN = "down", "Down"
    MAINTENANCE = "maintenance", "Maintenance"


# The checks of the periodic health check (`hosts.health_check`), in the order shown.
HEALTH_CHECKS = (
    ("reachable", "Reachable"),
    ("libvirtd", "libvirtd answers"),
    ("pools", "Storage pools active"),
    ("networks", "Networks up"),
    ("disk", "Free disk"),
)


class PowerMethod(models.TextChoices):
    """How the portal powers a host on and off."""

    NONE = "", "None (not from the portal)"
    IPMI = "ipmi", "IPMI (ipmitool, lanplus)"
    WOL = "wol", "Wake-on-LAN (power on only)"
    SSH = "ssh", "SSH poweroff (power off only)"


MAC_VALIDATOR = RegexValidator(
    r"^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}\Z", "Write the MAC address as aa:bb:cc:dd:ee:ff.")
ENV_NAME_VALIDATOR = RegexValidator(
    r"^[A-Za-z_][A-Za-z0-9_]{0,99}\Z", "Use the name of an environment variable, e.g. BMC_PW.")


BOTH_OR_NEITHER = ("Give either the environment variable or the file holding the BMC "
                   "password, not both.")
NOT_ABSOLUTE = "Give the file's absolute path."


def _word_problem(value: str) -> bool:
    return any(c.isspace() or c == "\0" for c in value) or value.startswith("-")


def power_config_problems(host: Host) -> dict[str, str]:
    """Return, per field, what a host's power configuration lacks or has wrong."""
    problems: dict[str, str] = {}
    method = host.power_method
    if method == PowerMethod.IPMI:
        if not host.bmc_address or _word_problem(host.bmc_address):
            problems["bmc_address"] = "IPMI needs the BMC's host name or address."
        if not host.bmc_username or _word_problem(host.bmc_username):
            problems["bmc_username"] = "IPMI needs the BMC user name (one word)."
        if bool(host.bmc_password_env) == bool(host.bmc_password_file):
            problems["bmc_password_env"] = BOTH_OR_NEITHER
        elif host.bmc_password_file and not host.bmc_password_file.startswith("/"):
            problems["bmc_password_file"] = NOT_ABSOLUTE
    if method == PowerMethod.WOL and not host.mac_address:
        problems["mac_address"] = "Wake-on-LAN needs the MAC address of the host."
    if method == PowerMethod.WOL and _word_problem(host.wol_broadcast or "x"):
        problems["wol_broadcast"] = "Give the broadcast address the packet is sent to."
    uses_ssh = method == PowerMethod.SSH or (method == PowerMethod.WOL and host.ssh_power_off)
    if uses_ssh and not host.address:
        problems["address"] = "Powering off through SSH needs the host's SSH address."
    return problems



class HostQuerySet(models.QuerySet):
    """Hosts, narrowed to those a user may see."""

    def visible_to(self, user) -> HostQuerySet:  # noqa: ANN001
        """Narrow to the hosts the user may see: all for admins, none otherwise."""
        return self.all() if is_portal_admin.test(user) else self.none()


class Host(models.Model):
    """A KVM host reached through a libvirt URI."""

    name = models.CharField(max_length=63, unique=True, validators=[NAME_VALIDATOR])
    uri = models.CharField(
        "libvirt URI", max_length=255, unique=True,
        help_text="qemu:///system for this machine, qemu+ssh://root@host/system for another.",
    )
    address = models.CharField(max_length=255, blank=True, help_text="SSH address, if any.")
    status = models.CharField(max_length=16, choices=HostStatus.choices, default=HostStatus.UP)
    vcpus = models.PositiveIntegerField("physical CPUs", default=0)
    memory_mib = models.PositiveIntegerField("physical memory (MiB)", default=0)
    cpu_overcommit = models.DecimalField(
        max_digits=4, decimal_places=2, default=4,
        validators=[MinValueValidator(1), MaxValueValidator(32)],
        help_text="How many vCPUs may be given per physical CPU.",
    )
    memory_reserved_mib = models.PositiveIntegerField(
        default=1024, help_text="Memory kept for the host itself."
    )
    accel = models.CharField(
        "acceleration", max_length=8, blank=True,
        help_text="kvm, qemu (TCG) or test; read from the host by the workers.",
    )
    cpu_mode = models.CharField(
        "CPU mode", max_length=80, blank=True, validators=[validate_cpu_mode],
        help_text="How VMs' CPUs are described to qemu; found by the probe or pinned.",
    )
    accel_pin = models.CharField(
        "pinned acceleration", max_length=8, blank=True, choices=AccelPin.choices,
        help_text="Blank: use what the probe finds.",
    )
    cpu_mode_pin = models.CharField(
        "pinned CPU mode", max_length=80, blank=True, validators=[validate_cpu_mode],
        help_text="Blank: use what the probe finds. Otherwise host-passthrough, host-model "
                  "(both need KVM) or custom:<model>, e.g. custom:EPYC.",
    )
    probe_report = models.JSONField(
        default=dict, blank=True,
        help_text="Each acceleration and CPU mode the last probe tried, and how it went.",
    )
    probed_at = models.DateTimeField(null=True, blank=True)
    ssh_host_key = models.TextField(blank=True, help_text="Recorded when the host is registered.")
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    unknown_domains = models.JSONField(
        default=list, blank=True,
        help_text="Domains on the host that the portal does not know (last reconcile).",
    )
    missing_domains = models.JSONField(
        default=list, blank=True,
        help_text="VMs the portal places here whose domain the host lacks (last reconcile).",
    )
    orphan_volumes = models.JSONField(
        default=list, blank=True,
        help_text="Volumes in the host's datastores that no VM, disk, seed or template of the "
                  "portal uses (last reconcile); nothing is deleted.",
    )
    reconciled_at = models.DateTimeField(null=True, blank=True)
    # The periodic health check (hosts.health_check): each check's last result.
    health_checks = models.JSONField(
        default=dict, blank=True,
        help_text="Each check of the last health check: passed or not, why, when it last passed.",
    )
    health_checked_at = models.DateTimeField(null=True, blank=True)
    health_failures = models.PositiveIntegerField(
        default=0, help_text="Health checks failed in a row (0 once one passes).")
    down_reason = models.TextField(blank=True, help_text="Why the health check marked it down.")
    down_by_check = models.BooleanField(
        default=False, help_text="Marked down by the health check, not by an administrator.")
    # Power (hosts.power): how the portal switches the host on and off.
    power_method = models.CharField(max_length=8, blank=True, choices=PowerMethod.choices,
                                    default=PowerMethod.NONE)
    bmc_address = models.CharField(
        "BMC address", max_length=255, blank=True,
        help_text="IPMI: host name or address of the board management controller.")
    bmc_username = models.CharField("BMC user", max_length=64, blank=True)
    bmc_password_env = models.CharField(
        "BMC password variable", max_length=100, blank=True, validators=[ENV_NAME_VALIDATOR],
        help_text="IPMI: the environment variable of the workers holding the BMC password.")
    bmc_password_file = models.CharField(
        "BMC password file", max_length=255, blank=True,
        help_text="IPMI: or an absolute path to a file holding it (readable by the workers).")
    mac_address = models.CharField(
        "MAC address", max_length=17, blank=True, validators=[MAC_VALIDATOR],
        help_text="Wake-on-LAN: the MAC of the host's network card that wakes it.")
    wol_broadcast = models.CharField(
        "Wake-on-LAN broadcast", max_length=64, blank=True, default="255.255.255.255",
        help_text="Where the magic packet is sent (UDP port 9).")
    ssh_power_off = models.BooleanField(
        "power off through SSH", default=False,
        help_text="Wake-on-LAN: power off by running poweroff over SSH at the host's address.")
    power_ssh_user = models.CharField(
        "SSH user for poweroff", max_length=32, blank=True, default="root",
        help_text="root runs poweroff; another user runs sudo -n poweroff.")

    objects = HostQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """Refuse a pinned host CPU mode together with pinned TCG, or half a power method."""
        if self.cpu_mode_pin in CPU_HOST_MODES and self.accel_pin == AccelPin.QEMU:
            raise ValidationError(
                {"cpu_mode_pin": f"{self.cpu_mode_pin} needs KVM; pin a named model for TCG."}
            )
        problems = power_config_problems(self)
        if problems:
            raise ValidationError(problems)

    @property
    def is_pinned(self) -> bool:
        """Return whether an administrator pinned the acceleration or CPU mode."""
        return bool(self.accel_pin or self.cpu_mode_pin)

    @property
    def cpu_mode_label(self) -> str:
        """Return the CPU mode in words."""
        return cpu_mode_label(self.cpu_mode, self.accel)

    @property
    def accel_label(self) -> str:
        """Return the acceleration in words ('' until a probe finds one)."""
        return accel_label(self.accel)

    @property
    def probe_attempts(self) -> list[dict]:
        """Return the last probe's attempts, each with its CPU mode in words."""
        attempts = (self.probe_report or {}).get("attempts") or []
        return [{**a, "cpu_label": cpu_mode_label(a.get("cpu_mode", ""), a.get("accel", "")),
                 "accel_label": accel_label(a.get("accel", ""))}
                for a in attempts if isinstance(a, dict)]

    @property
    def health_rows(self) -> list[dict]:
        """Return each check of the last health check, with its label and last pass."""
        rows = []
        for name, label in HEALTH_CHECKS:
            check = (self.health_checks or {}).get(name)
            if not isinstance(check, dict):
                continue
            passed = check.get("last_passed")
            rows.append({"name": name, "label": label, "ok": bool(check.get("ok")),
                         "detail": check.get("detail", ""),
                         "last_passed": parse_datetime(passed) if passed else None})
        return rows

    @property
    def health_state(self) -> str:
        """Return "ok", "failing" or "unknown" (never checked), for the badges."""
        if self.health_checked_at is None:
            return "unknown"
        return "failing" if self.health_failures else "ok"

    @property
    def passes_again(self) -> bool:
        """Return whether the health check marked the host down and it passes again now."""
        return (self.status == HostStatus.DOWN and self.down_by_check
                and self.health_state == "ok")

    @property
    def vcpu_capacity(self) -> int:
        """Return how many vCPUs the host may give out."""
        return int(self.vcpus * self.cpu_overcommit)

    @property
    def memory_capacity_mib(self) -> int:
        """Return how much memory the host may give out."""
        return max(self.memory_mib - self.memory_reserved_mib, 0)


def accel_label(accel: str) -> str:
    """Return an acceleration in words, the same on every page and message: KVM or TCG (no KVM).

    libvirt calls TCG domains "qemu"; that word alone reads like a brand, not "no KVM".
    """
    if accel in AccelPin.values:
        return AccelPin(accel).label
    return "libvirt test driver" if accel == "test" else accel.upper()


def cpu_mode_label(mode: str, accel: str = "") -> str:
    """Return a CPU mode in words: the host modes, a named model, or qemu's default."""
    if mode.startswith(CPU_CUSTOM_PREFIX):
        return f"named model {mode.removeprefix(CPU_CUSTOM_PREFIX)}"
    if mode:
        return mode
    return "qemu's default model" if accel in ("kvm", "qemu") else "—"


class Datastore(models.Model):
    """A directory of disk images, seen by libvirt as a storage pool on its hosts."""

    name = models.CharField(max_length=63, unique=True, validators=[NAME_VALIDATOR])
    path = models.CharField(
        max_length=255, validators=[validate_datastore_path],
        help_text="Absolute directory on every host, under one of the datastore roots "
                  "(PORTAL_DATASTORE_ROOTS); not a symbolic link.",
    )
    hosts = models.ManyToManyField(Host, related_name="datastores", blank=True)
    capacity_gib = models.PositiveIntegerField(default=0, help_text="0 means not limited.")
    shared = models.BooleanField(
        default=False,
        help_text="Every host sees the same files here (NFS or alike): a VM migrates without "
                  "copying its disk.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def pool_name(self) -> str:
        """Return the libvirt storage pool name of this datastore."""
        return f"portal-{self.name}"


class Template(models.Model):
    """A base image VMs are installed from, with the sizes a request may choose."""

    name = models.CharField(max_length=120, unique=True)
    datastore = models.ForeignKey(Datastore, on_delete=models.PROTECT, related_name="templates")
    image = models.CharField(
        max_length=255, validators=[validate_image_name],
        help_text="File name of the qcow2 image inside the datastore, e.g. debian-12.qcow2.",
    )
    os_name = models.CharField("operating system", max_length=120, blank=True)
    min_vcpus = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    max_vcpus = models.PositiveIntegerField(default=4, validators=[MinValueValidator(1)])
    min_memory_mib = models.PositiveIntegerField(default=256, validators=[MinValueValidator(64)])
    max_memory_mib = models.PositiveIntegerField(default=8192, validators=[MinValueValidator(64)])
    min_disk_gib = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    max_disk_gib = models.PositiveIntegerField(default=100, validators=[MinValueValidator(1)])
    cloud_init = models.BooleanField(
        "takes cloud-init", default=True,
        help_text="The image reads a NoCloud seed (hostname, user, password, SSH keys) at "
                  "boot, as Debian and Ubuntu cloud images and the demo guest do.",
    )
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """Refuse inverted bounds; the image's name has its own validator."""
        errors = {}
        for what in ("vcpus", "memory_mib", "disk_gib"):
            lo, hi = getattr(self, f"min_{what}"), getattr(self, f"max_{what}")
            if lo is not None and hi is not None and lo > hi:
                errors[f"max_{what}"] = "The maximum must not be below the minimum."
        if errors:
            raise ValidationError(errors)

    @property
    def image_path(self) -> str:
        """Return the image's absolute path on the hosts."""
        return str(PurePosixPath(self.datastore.path) / self.image)
