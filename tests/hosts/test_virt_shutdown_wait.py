"""The adapter's wait for an ACPI shut down: a typed timeout, and an early end when asked."""

from __future__ import annotations

import libvirt
import pytest

from hosts.virt import Hypervisor, ShutdownTimeout, VirtError


@pytest.fixture
def deaf_guest(monkeypatch):
    """Make the test driver's guests ignore the ACPI power button."""
    monkeypatch.setattr(libvirt.virDomain, "shutdown", lambda self: 0)


def test_a_guest_that_ignores_the_button_times_out_with_a_typed_error(
        hv: Hypervisor, web1: str, deaf_guest) -> None:
    hv.start(web1)
    with pytest.raises(ShutdownTimeout, match="did not shut down within 0.3 s") as caught:
        hv.shutdown(web1, timeout=0.3)
    assert isinstance(caught.value, VirtError) and caught.value.seconds == 0.3
    assert hv.domain(web1).state == "running"


def test_the_wait_ends_at_the_first_poll_that_asks_it_to(
        hv: Hypervisor, web1: str, deaf_guest) -> None:
    hv.start(web1)
    asked = []

    def stop_waiting() -> bool:
        asked.append(True)
        return len(asked) == 2

    facts = hv.shutdown(web1, timeout=30, stop_waiting=stop_waiting)
    assert len(asked) == 2 and facts.state == "running"
