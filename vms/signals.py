"""Signals of VMs that other applications connect to, so that vms imports none of them."""

from django.dispatch import Signal

# Sent with `vm` by the delete operation once the VM's resources are given back, just before
# it is marked deleted. Monitoring archives the VM's usage history.
vm_deleted = Signal()
