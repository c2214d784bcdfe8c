"""Fixtures of the libvirt adapter tests (tests/hosts/test_virt_*.py).

Each test gets its own host: a node file written to tmp_path and opened as
`test:///<tmp_path>/node.xml`. Reopening `test:///default` after `close_all()` does give fresh
state (see test_close_all_gives_fresh_test_default_state), but only once every handle on it is
gone; a domain handle kept alive by the traceback of an earlier failure would leak one test's
domains into the next. A private node file per test cannot leak.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hosts.virt import Hypervisor, close_all
from tests.hosts.virt_helpers import POOL, POOL_PATH, domain_xml, write_node_file


@pytest.fixture
def uri(tmp_path: Path):
    close_all()
    yield write_node_file(tmp_path / "node.xml")
    close_all()


@pytest.fixture
def hv(uri: str) -> Hypervisor:
    return Hypervisor(uri)


@pytest.fixture
def web1(hv: Hypervisor) -> str:
    hv.define_domain(domain_xml("web1"))
    return "web1"


@pytest.fixture
def pool(hv: Hypervisor, uri: str) -> str:
    hv.ensure_pool(POOL, POOL_PATH)
    return POOL
