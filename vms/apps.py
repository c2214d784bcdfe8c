"""VMs: requests, approvals, machines and the operations that act on them."""

from typing import Any

from django.apps import AppConfig
from django.conf import settings


class VmsConfig(AppConfig):
    """Register the VMs application and the operation specs of VMs."""

    name = "vms"
    verbose_name = "Virtual machines"

    def schedules(self) -> list[dict[str, Any]]:
        """Return the periodic tasks of VMs as django-q Schedule fields (`schedules_ensure`)."""
        return [
            {"name": "portal-reconcile", "func": "vms.tasks.reconcile", "schedule_type": "I",
             "minutes": settings.PORTAL["RECONCILE_EVERY_MINUTES"]},
            {"name": "portal-snapshots", "func": "vms.tasks.snapshots_scheduled",
             "schedule_type": "H"},
        ]

    def ready(self) -> None:
        """Register the VM operation specs, the VM hooks and steps of the operations engine."""
        from operations.registry import target_register
        from vms.services import (  # noqa: F401
            adoption,
            changes,
            cloud_power,
            evacuation,
            lifecycle,
            migration,
            missing,
            orphans,
            respawn,
            snapshots,
        )
        from vms.services.operation_hooks import VMHooks
        from vms.services.undo import steps_register

        target_register("vm", VMHooks())
        # While the cloud is shut down, no VM is started or changed; nor one a respawn moves.
        from operations.registry import request_guard_register

        request_guard_register(cloud_power.cloud_request_guard)
        request_guard_register(respawn.respawn_request_guard)
        # Hosts are powered off only with none of their VMs running.
        from hosts.power import host_running_vms_source_set
        from vms.selectors import host_running_vm_names

        host_running_vms_source_set(host_running_vm_names)
        # A host the health check marks down may have its VMs respawned elsewhere at once.
        from hosts.health_check import host_marked_down_listener_set

        host_marked_down_listener_set(respawn.respawn_after_marked_down)
        # Maintenance moves the host's VMs away (the host page asks through this).
        from hosts.services import host_evacuation_set

        host_evacuation_set(evacuation.evacuation_request)
        steps_register()

        from . import rules  # noqa: F401  (declares the VM, request and operation permissions)
