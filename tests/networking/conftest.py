"""Fixtures shared by the SSH port tests of this folder (tests/networking/test_ssh_port_*.py)."""

from tests.networking.ssh_port_helpers import box  # noqa: F401 - the NAT box stand-in
