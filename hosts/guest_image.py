"""Build the demo guest: a tiny Linux from Debian packages, packed as a bootable qcow2 disk.

The guest is Debian's kernel with a busybox-static userland and dropbear, all in an initramfs
on a FAT partition that syslinux boots. Its init (``hosts/guest/``) loads the virtio, AHCI and
CD-ROM drivers, applies a cloud-init NoCloud seed (hostname, user, password hash, SSH keys),
takes DHCP, runs dropbear and powers off on the ACPI power button.

Nothing is mounted and no loop device is used: the kernel package is fetched with
``apt-get download`` and unpacked with ``dpkg-deb -x``, the disk is written with mtools and
``syslinux --install``, then converted with ``qemu-img``. Images are cached by a key of the
kernel, busybox and dropbear versions and the guest files, so a build happens once per change.

No Django imports.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

GUEST_DIR = Path(__file__).resolve().parent / "guest"
# The generic flavour, not -cloud: the portal's seed comes on virtio-scsi, which both read,
# but the cloud kernel leaves out AHCI and IDE, and the guest also reads seeds attached so.
KERNEL_META_PACKAGE = "linux-image-amd64"
BUSYBOX = Path("/bin/busybox")
DROPBEAR = Path("/usr/sbin/dropbear")
DROPBEARKEY = Path("/usr/bin/dropbearkey")
SYSLINUX_MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")
USER_PACKAGES = ("busybox-static", "dropbear-bin")

DISK_MIB = 64
PARTITION_OFFSET = 1024 * 1024
SECTOR = 512
IMAGE_PREFIX = "demo-guest-"
COMMAND_TIMEOUT = 300

# Guest files: source name in hosts/guest -> (path in the guest, mode).
GUEST_FILES: dict[str, tuple[str, int]] = {
    "init": ("init", 0o755),
    "inittab": ("etc/inittab", 0o644),
    "rc.services": ("etc/rc.services", 0o755),
    "rc.shutdown": ("etc/rc.shutdown", 0o755),
    "nocloud": ("usr/sbin/nocloud", 0o755),
    "nocloud.awk": ("usr/lib/nocloud/parse.awk", 0o644),
    "udhcpc.script": ("usr/share/udhcpc/default.script", 0o755),
    "acpid.conf": ("etc/acpid.conf", 0o644),
    "power-button": ("etc/acpi/PWRF/00000080", 0o755),
    "modules": ("etc/modules", 0o644),
    "passwd": ("etc/passwd", 0o644),
    "group": ("etc/group", 0o644),
    "shadow": ("etc/shadow", 0o600),
    "shells": ("etc/shells", 0o644),
    "nsswitch.conf": ("etc/nsswitch.conf", 0o644),
    "profile": ("etc/profile", 0o644),
    "issue": ("etc/issue", 0o644),
}
BOOT_FILES = ("syslinux.cfg",)
GUEST_DIRS = (
    "bin", "sbin", "usr/bin", "usr/sbin", "usr/lib", "etc/dropbear", "etc/acpi", "dev",
    "proc", "sys", "run", "tmp", "mnt", "home", "root", "var", "var/log", "lib64",
)  # fmt: skip
_MODULE_NAME_RE = re.compile(r"^[a-z0-9_-]+$")
_LDD_PATH_RE = re.compile(r"(/\S+) \(0x[0-9a-f]+\)$")


class GuestImageError(RuntimeError):
    """The demo guest could not be built; the message says which step failed."""


@dataclass(frozen=True)
class KernelPackage:
    """The Debian kernel package the guest boots."""

    name: str
    version: str


def _run(argv: list[str], *, cwd: Path | None = None, timeout: int = COMMAND_TIMEOUT) -> str:
    try:
        result = subprocess.run(
            argv, cwd=cwd, check=True, capture_output=True, text=True, timeout=timeout
        )
    except FileNotFoundError:
        raise GuestImageError(f"{argv[0]} is not installed (see scripts/setup.sh)") from None
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip()[-2000:]
        raise GuestImageError(f"{' '.join(argv[:3])} failed: {detail}") from None
    except subprocess.TimeoutExpired:
        raise GuestImageError(f"{' '.join(argv[:3])} took longer than {timeout} s") from None
    return result.stdout


def kernel_package() -> KernelPackage:
    """Return the kernel package that Debian's generic kernel meta-package depends on."""
    out = _run(["apt-cache", "show", "--no-all-versions", KERNEL_META_PACKAGE])
    match = re.search(r"^Depends:.*?\b(linux-image-[0-9][^\s,(]*)", out, re.MULTILINE)
    if not match:
        raise GuestImageError(
            f"apt knows no {KERNEL_META_PACKAGE}; run apt-get update (see scripts/setup.sh)"
        )
    name = match.group(1)
    out = _run(["apt-cache", "show", "--no-all-versions", name])
    version = re.search(r"^Version: (\S+)", out, re.MULTILINE)
    if not version:
        raise GuestImageError(f"apt knows no version of {name}")
    return KernelPackage(name=name, version=version.group(1))


def installed_version(package: str) -> str:
    """Return the installed version of a Debian package, or raise GuestImageError."""
    try:
        out = _run(["dpkg-query", "-W", "-f", "${Version} ${db:Status-Status}", package])
    except GuestImageError:
        raise GuestImageError(f"{package} is not installed (see scripts/setup.sh)") from None
    version, _, status = out.partition(" ")
    if status.strip() != "installed":
        raise GuestImageError(f"{package} is not installed (see scripts/setup.sh)")
    return version


def guest_files_digest() -> str:
    """Return a digest of the guest's files and of this builder, which both shape the image."""
    digest = hashlib.sha256()
    sources = sorted(p for p in GUEST_DIR.iterdir() if p.is_file())
    for path in [*sources, Path(__file__).resolve()]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def content_key(kernel: KernelPackage, versions: dict[str, str], files_digest: str) -> str:
    """Return the cache key of an image made from these inputs."""
    parts = [f"{kernel.name}={kernel.version}"]
    parts += [f"{name}={versions[name]}" for name in sorted(versions)]
    parts.append(f"files={files_digest}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def ensure_guest_image(cache_dir: Path) -> Path:
    """Return the cached demo guest qcow2 under cache_dir, building it first if needed."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    kernel = kernel_package()
    versions = {name: installed_version(name) for name in USER_PACKAGES}
    key = content_key(kernel, versions, guest_files_digest())
    image = cache_dir / f"{IMAGE_PREFIX}{key}.qcow2"
    if image.is_file():
        return image
    with _locked(cache_dir / ".guest-image.lock"):
        # Another process may have finished the same build while this one waited.
        if image.is_file():
            return image
        work = Path(tempfile.mkdtemp(prefix=".guest-build-", dir=cache_dir))
        try:
            deb = _kernel_deb(cache_dir / "debs", kernel)
            _build(work, deb, image)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return image


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _kernel_deb(debs: Path, kernel: KernelPackage) -> Path:
    debs.mkdir(parents=True, exist_ok=True)
    # apt-get names the file name_version_arch.deb, quoting the epoch's ':' as %3a.
    quoted = kernel.version.replace(":", "%3a")
    found = sorted(debs.glob(f"{kernel.name}_{quoted}_*.deb"))
    if not found:
        for stale in debs.glob(f"{kernel.name}_*.deb"):
            stale.unlink()
        _run(["apt-get", "download", f"{kernel.name}={kernel.version}"], cwd=debs)
        found = sorted(debs.glob(f"{kernel.name}_{quoted}_*.deb"))
    if not found:
        raise GuestImageError(f"apt-get download left no .deb of {kernel.name}")
    return found[0]


def _build(work: Path, deb: Path, image: Path) -> None:
    unpacked = work / "kernel"
    _run(["dpkg-deb", "-x", str(deb), str(unpacked)])
    vmlinuz = _single(unpacked.glob("boot/vmlinuz-*"), "kernel image in the package")
    release = vmlinuz.name.removeprefix("vmlinuz-")
    root = work / "root"
    _stage_root(root, unpacked / "lib" / "modules" / release, release)
    initrd = work / "initrd.gz"
    initrd.write_bytes(gzip.compress(cpio_archive(root), compresslevel=9, mtime=0))
    raw = work / "disk.raw"
    _write_disk(raw, vmlinuz, initrd)
    tmp = image.with_name(f".{image.name}.tmp")
    _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(tmp)])
    # qemu runs as another user and must read the template; no secret is in the image.
    tmp.chmod(0o644)
    os.replace(tmp, image)


def _single(paths: Iterable[Path], what: str) -> Path:
    found = sorted(paths)
    if len(found) != 1:
        raise GuestImageError(f"expected one {what}, found {len(found)}")
    return found[0]


def _stage_root(root: Path, modules_dir: Path, release: str) -> None:
    for name in GUEST_DIRS:
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "root").chmod(0o700)
    for source, (target, mode) in GUEST_FILES.items():
        dest = root / target
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(GUEST_DIR / source, dest)
        dest.chmod(mode)
    shutil.copyfile(BUSYBOX, root / "bin" / "busybox")
    (root / "bin" / "busybox").chmod(0o755)
    for applet in busybox_applets():
        link = root / applet.lstrip("/")
        if link.exists() or link.is_symlink() or link.parent.name not in ("bin", "sbin"):
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(root / "bin" / "busybox", link.parent))
    for binary, target in ((DROPBEAR, "usr/sbin/dropbear"), (DROPBEARKEY, "usr/bin/dropbearkey")):
        shutil.copyfile(binary, root / target)
        (root / target).chmod(0o755)
        for library in shared_libraries(binary):
            dest = root / library.lstrip("/")
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(library, dest)
                dest.chmod(0o755)
    names = module_names((GUEST_DIR / "modules").read_text())
    _stage_modules(modules_dir, root / "lib" / "modules" / release, names)
    _run([str(BUSYBOX), "depmod", "-b", str(root), release])


def busybox_applets() -> list[str]:
    """Return the full paths of busybox's applets, as its --list-full prints them."""
    return [line for line in _run([str(BUSYBOX), "--list-full"]).split() if line]


def shared_libraries(binary: Path) -> list[str]:
    """Return the absolute paths of the shared libraries binary loads, per ldd."""
    paths = []
    for line in _run(["ldd", str(binary)]).splitlines():
        match = _LDD_PATH_RE.search(line.strip())
        if match:
            paths.append(match.group(1))
    if not paths:
        raise GuestImageError(f"ldd found no libraries for {binary}")
    return paths


def module_names(text: str) -> list[str]:
    """Return the module names listed in text, one a line, '#' starting a comment."""
    names = []
    for line in text.splitlines():
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if not _MODULE_NAME_RE.fullmatch(name):
            raise GuestImageError(f"bad module name {name!r} in hosts/guest/modules")
        names.append(name.replace("-", "_"))
    return names


def module_depends(ko: bytes) -> list[str]:
    """Return the modules a .ko file depends on, read from its modinfo section."""
    match = re.search(rb"(?:^|\0)depends=([^\0]*)\0", ko)
    if not match or not match.group(1):
        return []
    return [name.decode().replace("-", "_") for name in match.group(1).split(b",") if name]


def _stage_modules(source: Path, target: Path, names: list[str]) -> None:
    builtin = {
        Path(line).stem.replace("-", "_")
        for line in (source / "modules.builtin").read_text().split()
    }
    files = {ko.stem.replace("-", "_"): ko for ko in (source / "kernel").rglob("*.ko")}
    wanted: set[str] = set()
    todo = [name for name in names if name not in builtin]
    while todo:
        name = todo.pop()
        if name in wanted or name in builtin:
            continue
        if name not in files:
            raise GuestImageError(f"the kernel has no module {name}")
        wanted.add(name)
        todo.extend(module_depends(files[name].read_bytes()))
    for name in sorted(wanted):
        dest = target / files[name].relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(files[name], dest)
    for meta in ("modules.builtin", "modules.order"):
        shutil.copyfile(source / meta, target / meta)


def cpio_archive(root: Path) -> bytes:
    """Return a newc cpio archive of the tree at root, owned by root, plus /dev/console."""
    out = io.BytesIO()
    inode = 1

    def entry(name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        nonlocal inode
        encoded = name.encode() + b"\0"
        fields = (inode, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        out.write(b"070701" + b"".join(b"%08X" % value for value in fields))
        out.write(encoded)
        out.write(b"\0" * (-(110 + len(encoded)) % 4))
        out.write(data)
        out.write(b"\0" * (-len(data) % 4))
        inode += 1

    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            entry(name, stat.S_IFLNK | 0o777, os.readlink(path).encode())
        elif stat.S_ISDIR(info.st_mode):
            entry(name, stat.S_IFDIR | stat.S_IMODE(info.st_mode))
        else:
            entry(name, stat.S_IFREG | stat.S_IMODE(info.st_mode), path.read_bytes())
    # The kernel opens /dev/console before init runs, when devtmpfs is not yet mounted.
    entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    entry("dev/null", stat.S_IFCHR | 0o666, rdev=(1, 3))
    entry("TRAILER!!!", 0)
    out.write(b"\0" * (-out.tell() % 512))
    return out.getvalue()


def _write_disk(raw: Path, vmlinuz: Path, initrd: Path) -> None:
    total = DISK_MIB * 1024 * 1024
    start = PARTITION_OFFSET // SECTOR
    sectors = (total - PARTITION_OFFSET) // SECTOR
    with open(raw, "wb") as handle:
        handle.truncate(total)
    target = f"{raw}@@{PARTITION_OFFSET}"
    _run(["mformat", "-i", target, "-T", str(sectors), "-h", "64", "-s", "32",
          "-H", str(start), "-v", "GUEST", "::"])  # fmt: skip
    for source, name in ((vmlinuz, "vmlinuz"), (initrd, "initrd.gz"),
                         (GUEST_DIR / "syslinux.cfg", "syslinux.cfg")):  # fmt: skip
        _run(["mcopy", "-i", target, str(source), f"::{name}"])
    _run(["syslinux", "--install", "--offset", str(PARTITION_OFFSET), str(raw)])
    with open(raw, "r+b") as handle:
        handle.write(mbr(SYSLINUX_MBR.read_bytes(), start, sectors))


def mbr(boot_code: bytes, start: int, sectors: int) -> bytes:
    """Return a 512-byte MBR: boot code, one active FAT partition from start for sectors."""
    if len(boot_code) > 440:
        raise GuestImageError("the MBR boot code is longer than 440 bytes")
    # CHS fields say "use LBA" (the maximum); every BIOS of interest boots by LBA.
    chs = b"\xfe\xff\xff"
    partition = b"\x80" + chs + b"\x0e" + chs + struct.pack("<II", start, sectors)
    return boot_code.ljust(440, b"\0") + b"\0" * 6 + partition + b"\0" * 48 + b"\x55\xaa"
