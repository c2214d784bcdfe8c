"""Signals of VMs that other applications connect to, so that vms imports none of them."""

from django.dispatch import Signal

# Sent with `vm` by the delete operation once the VM's resources are given back, just before
# it is marked deleted. Monitoring archives the VM's usage history.
vm_deleted = Signal()

# Sent with `vm` when an install, clone or start succeeded and left the VM running.
# Monitoring collects its host at once, so its first figures come within a minute.
vm_started = Signal()
