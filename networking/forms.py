"""Forms of the networking pages: they parse; services decide."""

from __future__ import annotations

import ipaddress

from django import forms

from .models import VLAN


def example_range(vlan: VLAN) -> tuple[str, str]:
    """Return a from-to example inside the VLAN's subnet, after the addresses it already has.

    Libvirt's dynamic DHCP range is best kept below the pool (as the demo does), so the
    example starts at .100 of an empty VLAN and right after the highest address otherwise.
    """
    subnet = vlan.network
    last_host = subnet.network_address + max(subnet.num_addresses - 2, 1)
    highest = max((ipaddress.IPv4Address(a) for a in vlan.addresses.values_list(
        "address", flat=True)), default=None)
    start = (highest + 1 if highest is not None
             else subnet.network_address + min(100, subnet.num_addresses // 2))
    start = min(start, last_host)
    return str(start), str(min(start + 40, last_host))


class RangeForm(forms.Form):
    """A from-to range of addresses."""

    # Public addresses have no subnet here: the example is a documentation range (RFC 5737).
    first = forms.CharField(label="From", max_length=15,
                            widget=forms.TextInput(attrs={"placeholder": "203.0.113.20"}))
    last = forms.CharField(label="To", max_length=15,
                           widget=forms.TextInput(attrs={"placeholder": "203.0.113.60"}))


class PrivateRangeForm(RangeForm):
    """A range of private addresses of a VLAN, with MACs given or generated."""

    def __init__(self, *args: object, vlan: VLAN, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        first, last = example_range(vlan)
        self.fields["first"].widget.attrs["placeholder"] = first
        self.fields["last"].widget.attrs["placeholder"] = last

    macs = forms.CharField(
        label="MACs", required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Optional: one MAC per address, in order. Left empty, the portal generates "
                  "locally administered MACs.",
    )

    def mac_list(self) -> list[str] | None:
        """Return the given MACs, or None to have them generated."""
        text = self.cleaned_data.get("macs", "")
        macs = [m for m in text.replace(",", "\n").split() if m.strip()]
        return macs or None


