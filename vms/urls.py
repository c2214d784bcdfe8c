"""URLs of requests, approvals, VMs and operations."""

from django.urls import path, register_converter

from . import views, views_cloud, views_reconcile, views_respawn
from .services.lifecycle import OWNER_ACTIONS


class OwnerActionConverter:
    """Match only the actions an owner asks of a VM, so no later route is swallowed."""

    regex = "|".join(sorted(OWNER_ACTIONS, key=len, reverse=True))

    def to_python(self, value: str) -> str:
        """Return the action as it is."""
        return value

    def to_url(self, value: str) -> str:
        """Return the action as it is."""
        return value


register_converter(OwnerActionConverter, "vm_action")

app_name = "vms"

urlpatterns = [
    path("requests/", views.request_list, name="request_list"),
    path("requests/new/", views.request_create, name="request_create"),
    path("requests/<int:pk>/", views.request_detail, name="request_detail"),
    path("requests/<int:pk>/approve/", views.request_decide, {"decision": "approve"},
         name="request_approve"),
    path("requests/<int:pk>/reject/", views.request_decide, {"decision": "reject"},
         name="request_reject"),
    path("requests/<int:pk>/cancel/", views.request_cancel, name="request_cancel"),
    path("approvals/", views.approvals, name="approvals"),
    path("vms/", views.vm_list, name="vm_list"),
    path("vms/<int:pk>/", views.vm_detail, name="vm_detail"),
    path("vms/<int:pk>/status/", views.vm_detail, {"template": "vms/_vm_live.html"},
         name="vm_status"),
    path("vms/<int:pk>/login/", views.vm_detail, {"template": "vms/_vm_login.html"},
         name="vm_login"),
    path("vms/<int:pk>/password/", views.vm_password, name="vm_password"),
    path("vms/<int:pk>/change/resize/", views.vm_change, {"kind": "resize"},
         name="vm_change_resize"),
    path("vms/<int:pk>/change/disk/", views.vm_change, {"kind": "disk"},
         name="vm_change_disk"),
    path("vms/<int:pk>/change/clone/", views.vm_change, {"kind": "clone"},
         name="vm_change_clone"),
    path("vms/<int:pk>/snapshots/", views.snapshot_create, name="snapshot_create"),
    path("vms/<int:pk>/snapshots/<int:sid>/revert/", views.snapshot_action,
         {"action": "revert"}, name="snapshot_revert"),
    path("vms/<int:pk>/snapshots/<int:sid>/delete/", views.snapshot_action,
         {"action": "delete"}, name="snapshot_delete"),
    path("vms/<int:pk>/snapshot-schedule/", views.snapshot_schedule, name="snapshot_schedule"),
    path("vms/<int:pk>/disks/<int:did>/detach/", views.disk_action, {"action": "detach"},
         name="disk_detach"),
    path("vms/<int:pk>/disks/<int:did>/delete/", views.disk_action, {"action": "delete"},
         name="disk_delete"),
    path("vms/<int:pk>/save-template/", views.vm_save_template, name="vm_save_template"),
    path("vms/<int:pk>/change/network/", views.vm_change, {"kind": "network"},
         name="vm_change_network"),
    path("vms/<int:pk>/change/public-ip/", views.vm_change, {"kind": "public_ip"},
         name="vm_change_public_ip"),
    path("vms/<int:pk>/change/ssh-port/", views.vm_change, {"kind": "ssh_port"},
         name="vm_change_ssh_port"),
    path("vms/<int:pk>/mark-lost/", views_reconcile.vm_mark_lost, name="vm_mark_lost"),
    path("vms/<int:pk>/recreate/", views_reconcile.vm_recreate, name="vm_recreate"),
    path("vms/<int:pk>/migrate/", views.vm_migrate, name="vm_migrate"),
    path("vms/<int:pk>/<vm_action:action>/", views.vm_action, name="vm_action"),
    path("hosts/<int:pk>/findings/adopt/", views_reconcile.host_domain_adopt,
         name="host_domain_adopt"),
    path("hosts/<int:pk>/findings/delete-domain/", views_reconcile.host_domain_delete,
         name="host_domain_delete"),
    path("hosts/<int:pk>/findings/delete-volume/", views_reconcile.host_volume_delete,
         name="host_volume_delete"),
    path("hosts/<int:pk>/respawn/", views_respawn.host_respawn, name="host_respawn"),
    path("cloud/", views_cloud.cloud_overview, name="cloud"),
    path("cloud/shutdown/", views_cloud.cloud_shutdown, name="cloud_shutdown"),
    path("cloud/bootup/", views_cloud.cloud_bootup, name="cloud_bootup"),
    path("operations/", views.operation_list, name="operation_list"),
    path("operations/<int:pk>/retry/", views.operation_manage, {"action": "retry"},
         name="operation_retry"),
    path("operations/<int:pk>/cancel/", views.operation_cancel, name="operation_cancel"),
    path("operations/<int:pk>/dismiss/", views.operation_manage, {"action": "dismiss"},
         name="operation_dismiss"),
]
