"""Small helpers the applications' views share: the 404 refusal and a service's errors on a form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render


def require(allowed: bool) -> None:
    """Answer 404, not 403, when the user may not: nothing tells them the page or object exists."""
    if not allowed:
        raise Http404


def permitted_or_404(queryset: QuerySet, user: Any, permission: str | None = None,  # noqa: ANN401
                     **lookup: Any) -> Model:  # noqa: ANN401
    """Return the object among those the user sees that they may act on with `permission`.

    Anything else answers 404: another user's object looks exactly like one that does not exist.
    """
    obj = get_object_or_404(queryset.visible_to(user), **lookup)
    if permission:
        require(user.has_perm(permission, obj))
    return obj


def form_errors(form: forms.Form, exc: ValidationError) -> None:
    """Show a service's ValidationError on the form: on its fields where they are the form's."""
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)


@dataclass(frozen=True)
class Confirmation:
    """One question before a destructive action, in the words of the person asked."""

    title: str
    consequences: tuple[str, ...]
    button: str
    back_url: str
    # A statement the person must tick before confirming (posted as `checked=1`), or "".
    checkbox: str = ""


def checked(request: HttpRequest) -> bool:
    """Return whether the person ticked the confirmation's statement (`Confirmation.checkbox`)."""
    return request.POST.get("checked") == "1"


def confirmed(request: HttpRequest) -> bool:
    """Return whether the POST carries the person's confirmation."""
    return request.POST.get("confirmed") == "1"


def confirmation_page(request: HttpRequest, confirmation: Confirmation,
                      keep: dict[str, str] | None = None) -> HttpResponse:
    """Render the question; its Confirm posts the same action again with `confirmed=1`.

    `keep` names the fields of the first POST that the action needs again (what to act on).
    """
    return render(request, "portal/confirm.html", {
        "confirmation": confirmation, "action_url": request.path,
        "next": request.POST.get("next", ""), "keep": keep or {},
    })
