"""Allocation of private IP + MAC pairs, without duplicates under concurrency."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from portal.errors import PortalError

from .models import PrivateIP

if TYPE_CHECKING:
    from vms.models import VirtualMachine


class PoolExhausted(PortalError):
    """No free address is left in the pool."""


def ip_allocate(*, vm: VirtualMachine) -> PrivateIP:
    """Give the VM a free private IP and MAC, keeping one it already holds."""
    with transaction.atomic():
        held = PrivateIP.objects.select_related("vlan").filter(vm=vm).first()
        if held is not None:
            return held
        # skip_locked lets concurrent allocators take different rows instead of queueing;
        # the unique one-to-one on vm is the safety net.
        candidate = (
            PrivateIP.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(vm__isnull=True)
            .order_by("vlan__tag", "id")
            .first()
        )
        if candidate is None:
            raise PoolExhausted("No free private IP address is left in the pool.")
        candidate.vm = vm
        candidate.allocated_at = timezone.now()
        candidate.full_clean()
        candidate.save(update_fields=["vm", "allocated_at"])
        return PrivateIP.objects.select_related("vlan").get(pk=candidate.pk)


def ip_release(*, vm: VirtualMachine) -> None:
    """Give back the VM's private IP and MAC to the pool."""
    PrivateIP.objects.filter(vm=vm).update(vm=None, allocated_at=None)
