"""Monitoring: host and VM utilisation in RRD files."""

from typing import Any

from django.apps import AppConfig
from django.conf import settings


class MonitoringConfig(AppConfig):
    """Register the monitoring application."""

    name = "monitoring"
    verbose_name = "Monitoring"

    def schedules(self) -> list[dict[str, Any]]:
        """Return the collection's periodic task as django-q Schedule fields."""
        return [{"name": "portal-collect", "func": "monitoring.tasks.collect_all",
                 "schedule_type": "I",
                 "minutes": max(1, settings.PORTAL_MONITOR["PERIOD"] // 60)}]

    def ready(self) -> None:
        """Archive a VM's usage history when it is deleted; collect its host when it starts."""
        from hosts.selectors import host_load_source_set
        from vms.signals import vm_deleted, vm_started

        from .collector import host_cpu_load_latest, vm_deleted_archive
        from .tasks import vm_started_collect

        vm_deleted.connect(vm_deleted_archive, dispatch_uid="monitoring.vm_deleted_archive")
        vm_started.connect(vm_started_collect, dispatch_uid="monitoring.vm_started_collect")
        # The host list shows each host's last measured CPU load.
        host_load_source_set(host_cpu_load_latest)
