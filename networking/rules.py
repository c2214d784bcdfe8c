"""Who may see and manage the address pools and NAT; imported by `NetworkingConfig.ready()`."""

from __future__ import annotations

import rules

from core.accounts.predicates import is_portal_admin

# VLANs, security domains, the private and public pools and their ranges.
rules.add_perm("networking.manage_pools", is_portal_admin)
# Re-applying the NAT box's mappings (the operation's spec names this permission).
rules.add_perm("networking.manage_nat", is_portal_admin)
