"""The test tiers, defined once: pytest's markers, tests/conftest.py and run-tests.sh read them.

`python tests/tiers.py` prints one line per tier, "<number>\\t<name>\\t<pytest -m expression>",
for scripts/run-tests.sh. Imports nothing of the project, so it runs without Django.
"""

from __future__ import annotations

# The markers naming a real service a test needs, and what each needs.
MARKERS = {
    "hypervisor": "needs libvirtd at qemu:///system plus qemu-img and qemu (tier 5)",
    "postgres": "needs the database to be PostgreSQL (DATABASE_URL; tier 2)",
    "redis": "needs a Redis server at REDIS_URL (tier 3)",
    "ldap": "needs OpenLDAP's slapd at /usr/sbin/slapd (tier 4)",
    "browser": "needs Debian's /usr/bin/chromium and Playwright for Python (tier 6)",
    "netns": "needs root, iproute2 (ip netns), iptables and OpenSSH's sshd (tier 7)",
}

# Tiers 1..7 in order. "fast" runs the tests with no marker on SQLite; "postgres" runs those
# plus the `postgres` ones on PostgreSQL; each later tier runs the tests of its marker.
TIERS = ("fast", "postgres", "redis", "ldap", "hypervisor", "browser", "netns")

# A test carrying several of these markers runs only in the tier of the first one it carries
# (the service checks in tests/conftest.py still cover every marker it has).
PRIORITY = ("redis", "browser", "hypervisor", "ldap", "netns")


def tier_expression(name: str) -> str:
    """Return the pytest `-m` expression that selects the tests of one tier."""
    if name == "fast":
        return " and ".join(f"not {marker}" for marker in MARKERS)
    if name == "postgres":
        return " and ".join(f"not {marker}" for marker in PRIORITY)
    before = PRIORITY[:PRIORITY.index(name)]
    return " and ".join([name, *(f"not {marker}" for marker in before)])


if __name__ == "__main__":
    for number, tier in enumerate(TIERS, start=1):
        print(f"{number}\t{tier}\t{tier_expression(tier)}")
