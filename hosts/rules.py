"""Who may see and manage hosts; imported by `HostsConfig.ready()`."""

from __future__ import annotations

import rules

from core.accounts.predicates import is_portal_admin

rules.add_perm("hosts.view_host", is_portal_admin)
# Refresh, pins, and every operation on a host (its spec names this permission).
rules.add_perm("hosts.manage_host", is_portal_admin)
