"""Forms of the networking pages: they parse; services decide."""

from __future__ import annotations

from django import forms


class RangeForm(forms.Form):
    """A from-to range of addresses."""

    first = forms.CharField(label="From", max_length=15,
                            widget=forms.TextInput(attrs={"placeholder": "192.168.10.20"}))
    last = forms.CharField(label="To", max_length=15,
                           widget=forms.TextInput(attrs={"placeholder": "192.168.10.60"}))


class PrivateRangeForm(RangeForm):
    """A range of private addresses, with MACs given or generated."""

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


