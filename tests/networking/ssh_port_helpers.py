"""Shared by the SSH port tests: the NAT box stand-in, its fixture and asking for a port.

`box` is offered to tests/networking through conftest.py; test_ssh_port_views.py imports it.
"""

from __future__ import annotations

import pytest

from hosts.remote import RemoteError
from networking import nat
from tests.vms.test_lifecycle import run_pending
from vms.models import RequestKind
from vms.services.workflow import vm_change_request_create, vm_request_approve

BOX = "198.51.100.7"


class RecordingNat:
    """A NAT box that remembers its mappings and port forwards; it can be told to fail."""

    rules: set[tuple] = set()
    calls: list[tuple] = []
    fail_forward_to: str | None = None  # a private address whose forward breaks half-way

    def apply(self, m):
        self.calls.append(("apply", m.public_ip, m.private_ip))
        self.rules.add(("map", m.public_ip, m.private_ip))

    def remove(self, m):
        self.calls.append(("remove", m.public_ip, m.private_ip))
        self.rules.discard(("map", m.public_ip, m.private_ip))

    def forward(self, fwd):
        self.calls.append(("forward", fwd.public_ip, fwd.public_port, fwd.private_ip))
        # The DNAT rule goes in first, as on a real box; then the FORWARD accept may fail.
        self.rules.add(("dnat", fwd.public_ip, fwd.public_port, fwd.private_ip))
        if fwd.private_ip == self.fail_forward_to:
            raise RemoteError("root@nat:22: iptables: Chain 'FORWARD' does not exist",
                              exit_status=1, stderr="iptables: No chain/target/match by that name.")
        self.rules.add(("accept", fwd.private_ip))

    def unforward(self, fwd):
        self.calls.append(("unforward", fwd.public_ip, fwd.public_port, fwd.private_ip))
        self.rules.discard(("dnat", fwd.public_ip, fwd.public_port, fwd.private_ip))
        self.rules.discard(("accept", fwd.private_ip))

    def clear(self, mappings):
        self.calls.append(("clear",))
        self.rules.clear()


@pytest.fixture
def box(monkeypatch, settings):
    settings.PORTAL_NAT = {**settings.PORTAL_NAT, "PUBLIC_ADDRESS": BOX,
                           "FORWARD_PORTS": "10000-10002"}
    RecordingNat.rules, RecordingNat.calls, RecordingNat.fail_forward_to = set(), [], None
    monkeypatch.setattr(nat, "backend_from_settings", lambda config: RecordingNat())
    return RecordingNat


def ask(site, vm, capture, actor=None, **kw):
    """Ask for an SSH port, have an admin other than the requester approve, run the operation."""
    req = vm_change_request_create(requester=actor or site.admin, vm=vm,
                                   kind=RequestKind.SSH_PORT, purpose="ssh from home", **kw)
    approver = site.another_admin() if req.requester == site.admin else site.admin
    with capture(execute=False):
        vm_request_approve(request=req, actor=approver)
    op = run_pending(vm)
    vm.refresh_from_db()
    return req, op


def forwards(rules):
    return {r for r in rules if r[0] == "dnat"}
