"""Services own every write of the VMs application."""
