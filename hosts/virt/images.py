"""Where images may live and what they may be: datastore paths and image inspection.

OSSA-2024-001: a qcow2 image can name other files (a backing file, an external data file)
that qemu opens as the guest's disk, and libvirt hands every file of a disk to the guest's
user. So an image is only used after `qemu-img info` has read it with an explicit format
(no probing) and it names nothing outside what the portal expects, and every path is
resolved and must stay inside its datastore. No Django here: callers pass the roots.
"""

from __future__ import annotations

import os
import posixpath
import unicodedata
from collections.abc import Iterable

from .errors import VirtError
from .names import OBJECT_NAME_RE

QEMU_IMG_TIMEOUT = 60


class ImageRefused(VirtError):  # noqa: N818 - a refusal, named like NotFound
    """An image is not safe to use; the message says why in words an admin understands."""


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
