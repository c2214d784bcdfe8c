"""Forms of the people pages: they parse; services decide."""

from __future__ import annotations

from django import forms

from core.validators import FreeTextValidator

from .models import Organisation, Role


class PersonForm(forms.Form):
    """What an admin or org-admin may change about a person."""

    role = forms.ChoiceField(choices=Role.choices)
    organisation = forms.ModelChoiceField(queryset=Organisation.objects.all(), required=False)
    is_active = forms.BooleanField(label="May log in", required=False)

    def __init__(self, *args: object, roles: list[str], may_move: bool, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = [(r, Role(r).label) for r in roles]
        if not may_move:
            del self.fields["organisation"]


class OrganisationForm(forms.Form):
    """A new organisation."""

    name = forms.CharField(max_length=120, validators=[FreeTextValidator("name")])


class SSHKeyForm(forms.Form):
    """A public key to keep in one's profile."""

    name = forms.CharField(max_length=64, required=False,
                           help_text="Your name for it; the key's comment if left empty.")
    public_key = forms.CharField(
        label="Public key", max_length=8192, strip=True,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false",
                                     "placeholder": "ssh-ed25519 AAAAC3Nza… you@laptop"}),
        help_text="One line from your .pub file: ed25519, ECDSA, or RSA of at least 2048 bits.",
    )
