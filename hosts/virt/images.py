"""Where images may live and what they may be: datastore paths and image inspection.

OSSA-2024-001: a qcow2 image can name other files (a backing file, an external data file)
that qemu opens as the guest's disk, and libvirt hands every file of a disk to the guest's
user. So an image is only used after `qemu-img info` has read it with an explicit format
(no probing) and it names nothing outside what the portal expects, and every path is
resolved and must stay inside its datastore. No Django here: callers pass the roots.
"""

from __future__ import annotations

import json
import os
import posixpath
import subprocess
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .checks import OBJECT_NAME_RE
from .errors import VirtError

QEMU_IMG_TIMEOUT = 60


class ImageRefused(VirtError):  # noqa: N818 - a refusal, named like NotFound
    """An image is not safe to use; the message says why in words an admin understands."""


class ImageMissing(ImageRefused):  # noqa: N818
    """The image (or its datastore folder) is not on the host."""


# -- paths --------------------------------------------------------------------------------------


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text)


def is_normal_abs_path(path: str) -> bool:
    """Return whether path is absolute, normalised and free of control characters."""
    return (
        isinstance(path, str)
        and path.startswith("/")
        and not _has_control(path)
        # normpath keeps a leading '//' (POSIX allows it a meaning); we never want it.
        and not path.startswith("//")
        and posixpath.normpath(path) == path
    )


def is_within(path: str, root: str) -> bool:
    """Return whether the normalised path is root itself or lies below it."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def _normal_root(root: str) -> str:
    return "/" + posixpath.normpath(root).lstrip("/")


def datastore_path_problem(path: str, roots: Iterable[str]) -> str | None:
    """Return why path cannot be a datastore under these roots, or None when it can.

    Checked on the machine that runs this: a path that exists must not be a symlink, and
    wherever its existing part leads (realpath) must still lie inside a root.
    """
    roots = tuple(_normal_root(root) for root in roots)
    if not isinstance(path, str) or not path:
        return "Give the datastore's directory."
    if _has_control(path):
        return "The path contains control characters (a newline, a tab …)."
    if not path.startswith("/"):
        return "Give an absolute path, starting with /."
    if path.startswith("//") or posixpath.normpath(path) != path:
        return ("Give the path in its normal form: no '//', '.' or '..' parts and no "
                f"trailing slash (for example {posixpath.normpath(path).replace('//', '/')}).")
    if not roots:
        return "No datastore roots are configured (PORTAL_DATASTORE_ROOTS)."
    if not any(is_within(path, root) for root in roots):
        return ("A datastore must lie under one of the configured datastore roots: "
                f"{', '.join(roots)} (PORTAL_DATASTORE_ROOTS).")
    if os.path.islink(path):
        return "The path is a symbolic link; give the real directory."
    real = os.path.realpath(path)
    if not any(is_within(real, os.path.realpath(root)) for root in roots):
        return (f"The path leads to {real} through a symbolic link, outside the configured "
                "datastore roots.")
    if os.path.exists(path) and not os.path.isdir(path):
        return "The path is a file, not a directory."
    return None


def image_name_problem(name: str) -> str | None:
    """Return why name cannot be an image's file name in a datastore, or None when it can."""
    if not isinstance(name, str) or not name:
        return "Give the image's file name."
    if _has_control(name):
        return "The file name contains control characters (a newline, a tab …)."
    if "/" in name:
        return "Give a plain file name inside the datastore, with no folder and no slash."
    if not OBJECT_NAME_RE.fullmatch(name):
        return ("Use a lower-case letter, then up to 62 lower-case letters, digits, dots, "
                "hyphens or underscores (for example debian-12.qcow2).")
    return None


# -- inspection ---------------------------------------------------------------------------------

# run(argv) -> (exit status, stdout, stderr); raises VirtError when the command cannot be run.
Runner = Callable[[list[str]], tuple[int, str, str]]


def run_local(argv: list[str], timeout: float = QEMU_IMG_TIMEOUT) -> tuple[int, str, str]:
    """Run argv on this machine (the host of a qemu:/// URI) with a timeout."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,  # noqa: S603
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise VirtError(f"`{' '.join(argv)}` did not answer within {timeout:g} s") from exc
    except OSError as exc:
        raise VirtError(f"cannot run {argv[0]}: {exc}") from exc
    return done.returncode, done.stdout, done.stderr


@dataclass(frozen=True)
class ImageInfo:
    """What `qemu-img info` read from an image's header, opened with an explicit format."""

    path: str
    format: str
    virtual_size: int
    backing: str | None
    data_file: str | None
    encrypted: bool


def parse_qemu_img_info(path: str, text: str) -> ImageInfo:
    """Return the facts of `qemu-img info --output=json` that decide whether an image is safe."""
    try:
        info = json.loads(text)
    except ValueError as exc:
        raise VirtError(f"cannot read the image {path}: qemu-img answered {text[:200]!r}") \
            from exc
    if not isinstance(info, dict):
        raise VirtError(f"cannot read the image {path}: qemu-img answered {text[:200]!r}")
    specific = (info.get("format-specific") or {}).get("data") or {}
    backing = info.get("full-backing-filename") or info.get("backing-filename")
    return ImageInfo(
        path=path,
        format=str(info.get("format", "")),
        virtual_size=int(info.get("virtual-size") or 0),
        backing=str(backing) if backing else None,
        data_file=str(specific["data-file"]) if specific.get("data-file") else None,
        encrypted=bool(info.get("encrypted") or specific.get("encrypt")),
    )


def _backing_path(backing: str, name: str) -> str:
    if not is_normal_abs_path(backing):
        raise ImageRefused(f"{name} names its backing file as {backing!r}, not as a plain "
                           "absolute path")
    return backing


def _realpath(path: str, run: Runner) -> str | None:
    """Return where path leads on the host, or None when it does not exist there."""
    status, out, _err = run(["realpath", "-e", "--", path])
    real = out.strip()
    if status != 0 or not real:
        return None
    if not is_normal_abs_path(real):
        raise VirtError(f"cannot resolve {path}: realpath answered {real!r}")
    return real


def image_check(
    path: str,
    *,
    datastore: str,
    run: Runner,
    fmt: str = "qcow2",
    backing: str | None = None,
    any_backing_inside: bool = False,
) -> ImageInfo:
    """Inspect the image at path on the host behind run, and refuse what it must not be.

    Refused (ImageRefused): a path that resolves outside datastore (a symlink escaping it),
    an image that is not fmt, one that names an external data file, one with a backing file
    other than backing (None: no backing at all), and an encrypted one. With
    any_backing_inside (a VM's disk, whose base may be an older template image) the backing
    file may be any qcow2 of the datastore that passes these checks itself. A missing image
    raises ImageMissing; a command that cannot run raises VirtError.
    """
    if not is_normal_abs_path(path) or not is_normal_abs_path(datastore):
        raise ImageRefused(f"the path {path!r} is not an absolute, normalised path")
    name = posixpath.basename(path)
    if not is_within(path, datastore) or path == datastore:
        raise ImageRefused(f"{path} is not inside its datastore {datastore}")
    real_store = _realpath(datastore, run)
    if real_store is None:
        raise ImageMissing(f"the datastore folder {datastore} does not exist on the host")
    real = _realpath(path, run)
    if real is None:
        raise ImageMissing(f"{name} is not in the datastore {datastore}")
    if not is_within(real, real_store) or real == real_store:
        raise ImageRefused(
            f"{name} is a link to {real}, outside its datastore {datastore}; libvirt would "
            "hand that file to the guest"
        )
    status, out, err = run(["qemu-img", "info", "-f", fmt, "--output=json", "--", real])
    if status != 0:
        reason = err.strip().splitlines()[-1] if err.strip() else f"exit status {status}"
        if f"not in {fmt} format" in reason:
            raise ImageRefused(f"{name} is not a {fmt} image, as its template says")
        if "data file" in reason.lower() or "data-file" in reason.lower():
            raise ImageRefused(f"{name} refers to a data file that cannot be opened: {reason}")
        raise VirtError(f"cannot inspect the image {real}: {reason}")
    info = parse_qemu_img_info(real, out)
    if info.format != fmt:
        raise ImageRefused(f"{name} is {info.format or 'of no known format'}, not {fmt}")
    if info.data_file is not None:
        raise ImageRefused(
            f"{name} refers to a data file outside the image ({info.data_file}); qemu would "
            "give the guest that file as its disk"
        )
    if info.encrypted:
        raise ImageRefused(f"{name} is encrypted; the portal has no key to give qemu")
    if any_backing_inside and info.backing is not None:
        base = _backing_path(info.backing, name)
        if not is_within(base, datastore):
            raise ImageRefused(f"{name} is backed by {info.backing}, outside its datastore "
                               f"{datastore}")
        image_check(base, datastore=datastore, run=run)
    elif info.backing != backing:
        if backing is None:
            raise ImageRefused(
                f"{name} has a backing file ({info.backing}); a template must be a standalone "
                "image"
            )
        raise ImageRefused(
            f"{name} is backed by {info.backing or 'nothing'}, not by {backing}"
        )
    return info
