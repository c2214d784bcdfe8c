"""VMs: requests, approvals, machines and the operations that act on them."""

from django.apps import AppConfig


class VmsConfig(AppConfig):
    """Register the VMs application and the operation handlers of every application."""

    name = "vms"
    verbose_name = "Virtual machines"

    def ready(self) -> None:
        """Import the modules whose handlers the Operation runner dispatches to."""
        from hosts import services as host_services  # noqa: F401
        from vms.services import changes, lifecycle, snapshots  # noqa: F401
