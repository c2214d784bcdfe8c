"""The form of the API tokens page."""

from __future__ import annotations

from django import forms

from core.validators import FreeTextValidator


class TokenForm(forms.Form):
    """A new token's name, scope and optional expiry."""

    name = forms.CharField(max_length=64, validators=[FreeTextValidator("name")],
                           help_text="Your name for it, e.g. notebook or ci.")
    read_only = forms.BooleanField(
        label="Read-only", required=False,
        help_text="It may only read (list and show), never change anything.")
    expires_at = forms.DateField(
        label="Expires on", required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="Optional: the token stops working at the start of this day (UTC).")
