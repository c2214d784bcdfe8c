"""The Hypervisor facade: one libvirt host, its operations gathered from one module per concern.

Callers write `Hypervisor(uri).start(name)`; each concern (host facts, domains, storage,
networks, devices, snapshots, stats, consoles, migration) lives in its own module as a part
built on `HypervisorBase`; a new concern is a new part listed here.
"""

from __future__ import annotations

from .console import Consoles
from .devices import Devices
from .domains import Domains
from .host import Host
from .migration import Migration
from .networks import Networks
from .snapshots import Snapshots
from .stats import Stats
from .storage import Storage


# Migration builds on Domains (it defines and undefines on both hosts), so it comes first.
class Hypervisor(Migration, Host, Domains, Storage, Networks, Devices, Snapshots, Stats,
                 Consoles):
    """One libvirt host reached through its URI; every method is safe to retry."""
