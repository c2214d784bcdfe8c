"""The one map from libvirt's domain states to the VM states the portal records."""

from hosts.virt import DOMAIN_STATES, POWER_STATES, power_state
from vms.models import VMState


def test_every_libvirt_domain_state_reads_as_a_vm_state():
    assert set(POWER_STATES) == set(DOMAIN_STATES.values())
    assert {power_state(s) for s in DOMAIN_STATES.values()} == {
        VMState.RUNNING, VMState.PAUSED, VMState.SHUTOFF, VMState.CRASHED, VMState.UNKNOWN}


def test_no_domain_or_a_state_libvirt_adds_later_reads_as_unknown():
    assert power_state(None) == VMState.UNKNOWN
    assert power_state("something-new") == VMState.UNKNOWN
    assert power_state("blocked") == power_state("shutdown") == VMState.RUNNING
    assert power_state("pmsuspended") == VMState.PAUSED
