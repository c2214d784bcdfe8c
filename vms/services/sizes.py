"""The one check of VM sizes against the template's and the site's bounds."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError

from hosts.models import Template


def size_bounds(template: Template) -> dict[str, tuple[int, int]]:
    """Return the (lowest, highest) vCPUs, RAM and disk a VM of this template may have."""
    site = settings.PORTAL
    return {
        "vcpus": (template.min_vcpus, min(template.max_vcpus, site["MAX_VCPUS"])),
        "memory_mib": (template.min_memory_mib,
                       min(template.max_memory_mib, site["MAX_MEMORY_MIB"])),
        "disk_gib": (template.min_disk_gib, min(template.max_disk_gib, site["MAX_DISK_GIB"])),
    }


def change_bounds(template: Template) -> dict[str, tuple[int, int]]:
    """Return the (lowest, highest) of what a resize, extra disk or clone request asks for."""
    site = settings.PORTAL
    sizes = size_bounds(template)
    return {"vcpus": sizes["vcpus"], "memory_mib": sizes["memory_mib"],
            "size_gib": (1, site["MAX_EXTRA_DISK_GIB"]), "count": (1, site["MAX_CLONES"])}


UNITS = {"vcpus": "vCPUs", "memory_mib": "MiB", "disk_gib": "GiB"}


def vm_sizes_validate(*, template: Template, vcpus: int | None, memory_mib: int | None,
                      disk_gib: int | None, extra_disk_gib: int | None = None) -> None:
    """Raise a ValidationError naming every size outside its bounds.

    Every size a VM gets (at request, resize or extra disk) passes here, so a quota check
    joins in one place.
    """
    errors: dict[str, str] = {}
    given = {"vcpus": vcpus, "memory_mib": memory_mib, "disk_gib": disk_gib}
    for field, (lo, hi) in size_bounds(template).items():
        value = given[field]
        if value is None:
            errors[field] = "This field is required."
        elif not lo <= value <= hi:
            errors[field] = f"Choose between {lo} and {hi} {UNITS[field]} for {template.name}."
    if extra_disk_gib is not None:
        hi = settings.PORTAL["MAX_EXTRA_DISK_GIB"]
        if not 1 <= extra_disk_gib <= hi:
            errors["size_gib"] = f"Choose between 1 and {hi} GiB."
    if errors:
        raise ValidationError(errors)
