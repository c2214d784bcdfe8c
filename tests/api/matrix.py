"""Every API route with each method, and the status each role gets: the API's permission matrix.

Roles are those of the pages' matrix, plus `readonly`: the student's read-only token. The pages'
matrix (tests/portal/test_permission_matrix.py) checks that every `api:` route is listed here.
"""

from __future__ import annotations

ROLES = ("anon", "student", "faculty", "orgadmin", "admin", "other_student", "other_orgadmin",
         "readonly")
SIGNED_IN = ("student", "faculty", "orgadmin", "admin", "other_student", "other_orgadmin")
SEES = ("student", "faculty", "orgadmin", "admin")  # the student's VM and request
OPERATES = ("student", "orgadmin", "admin")
ADMIN = ("admin",)


def row(status: int = 200, who: tuple[str, ...] = SIGNED_IN, *, others: int = 404,
        anon: int = 401, readonly: int | None = None, **special: int) -> dict[str, int]:
    """Return the status per role: `status` for `who`, `others` for the rest."""
    out = {role: others for role in ROLES}
    out.update(dict.fromkeys(who, status))
    out.update(special)
    out["anon"] = anon
    # A read-only token reads as its owner does and is refused every write (403).
    out["readonly"] = out["student"] if readonly is None else readonly
    return out


def write(status: int, who: tuple[str, ...] = OPERATES, **special: int) -> dict[str, int]:
    """Return the row of a write: refused to the read-only token whatever the owner may do."""
    return row(status, who, readonly=403, **special)


PUBLIC = row(200, anon=200)  # the schema and its pages

# (route name, method, object kind) -> status per role
API_MATRIX: dict[tuple[str, str, str | None], dict[str, int]] = {
    ("api:root", "get", None): PUBLIC,
    ("api:schema", "get", None): PUBLIC,
    ("api:docs", "get", None): PUBLIC,
    ("api:redoc", "get", None): PUBLIC,
    ("api:vm-list", "get", None): row(),
    ("api:vm-detail", "get", "vm"): row(200, SEES),
    ("api:vm-detail", "delete", "vm"): write(202),
    ("api:vm-start", "post", "vm"): write(409),  # running already: the service says so
    ("api:vm-shutdown", "post", "vm"): write(202),
    ("api:vm-force-off", "post", "vm"): write(202),
    ("api:vm-reboot", "post", "vm"): write(202),
    ("api:vm-suspend", "post", "vm"): write(202),
    ("api:vm-resume", "post", "vm"): write(409),  # not paused
    ("api:snapshot-list", "get", "snapshots"): row(200, SEES),
    ("api:snapshot-list", "post", "snapshots"): write(202),
    ("api:snapshot-detail", "delete", "snapshot"): write(202),
    ("api:snapshot-revert", "post", "snapshot"): write(202),
    ("api:vm-extra-disks", "get", "vm_extra"): row(200, SEES),
    ("api:vm-extra-usage", "get", "vm_extra"): row(200, SEES),
    # A change without a reason: 400 to those who may ask for one.
    ("api:vm-extra-changes", "post", "vm_extra"): write(400),
    ("api:disk-detail", "delete", "disk"): write(202),
    ("api:disk-detach", "post", "disk"): write(202),
    ("api:host-list", "get", None): row(200, ADMIN),
    ("api:host-detail", "get", "host"): row(200, ADMIN),
    ("api:host-usage", "get", "host"): row(200, ADMIN),
    ("api:vlan-list", "get", None): row(200, ADMIN),
    ("api:vlan-detail", "get", "vlan"): row(200, ADMIN),
    ("api:address-list", "get", "addresses"): row(200, ADMIN),
    ("api:address-detail", "get", "address"): row(200, ADMIN),
    ("api:public-ip-list", "get", None): row(200, ADMIN),
    ("api:public-ip-detail", "get", "public_ip"): row(200, ADMIN),
    ("api:operation-list", "get", None): row(),
    ("api:operation-detail", "get", "operation"): row(200, SEES),
    ("api:request-list", "get", None): row(),
    ("api:request-list", "post", None): write(400, SIGNED_IN),  # an empty request: 400
    ("api:request-detail", "get", "request"): row(200, SEES),
    # The requester reaches the service, which refuses their own decision (409).
    ("api:request-approve", "post", "request"): write(200, ("faculty", "admin"), student=409),
    ("api:request-reject", "post", "request"): write(200, ("faculty", "admin"), student=409),
    ("api:request-cancel", "post", "request"): write(200, ("student",)),
    ("api:approval-list", "get", None): row(),
    ("api:template-list", "get", None): row(),
    ("api:template-detail", "get", "template"): row(),
    ("api:security-domain-list", "get", None): row(),
    ("api:security-domain-detail", "get", "domain"): row(200, SEES),
}

API_ROUTES = {name for name, _, _ in API_MATRIX}
