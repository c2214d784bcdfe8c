"""Small helpers the applications' views share: the 404 refusal and a service's errors on a form."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.http import Http404


def require(allowed: bool) -> None:
    """Answer 404, not 403, when the user may not: nothing tells them the page or object exists."""
    if not allowed:
        raise Http404


def form_errors(form: forms.Form, exc: ValidationError) -> None:
    """Show a service's ValidationError on the form: on its fields where they are the form's."""
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)
