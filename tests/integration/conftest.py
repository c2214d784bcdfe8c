"""Fixtures of the hypervisor tier: a fresh connection, pool, work folder and domain name.

Each test works in its own 0755 folder under /var/tmp (qemu runs as another user and must
reach the images), its own storage pool, and names its objects portaltest-<random>;
everything is removed at teardown.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hosts.virt import Hypervisor, close_all
from tests.integration.guest import guest_image  # noqa: F401 - the session fixture
from tests.integration.qemu import URI, make_base_image, unique, virsh


@pytest.fixture
def hv() -> Iterator[Hypervisor]:
    close_all()
    yield Hypervisor(URI)
    close_all()


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="portaltest-", dir="/var/tmp"))
    path.chmod(0o755)  # qemu runs as libvirt-qemu and must reach the images
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def pool(hv: Hypervisor, workdir: Path) -> Iterator[tuple[str, Path]]:
    """Return (pool name, base image path) of a fresh dir pool holding a bootable base."""
    name = unique()
    base = make_base_image(workdir)
    hv.ensure_pool(name, str(workdir))
    yield name, base
    virsh("pool-destroy", name, check=False)
    virsh("pool-undefine", name, check=False)


@pytest.fixture
def domain_name(hv: Hypervisor) -> Iterator[str]:
    """Return a fresh domain name and make sure no such domain survives the test."""
    name = unique()
    yield name
    try:
        hv.undefine_domain(name)
    finally:
        virsh("destroy", name, check=False)
        virsh("undefine", name, "--nvram", check=False)
