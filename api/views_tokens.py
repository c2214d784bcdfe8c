"""The API tokens page of one's profile: make a token (shown once), revoke one."""

from __future__ import annotations

from datetime import UTC, datetime, time

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from core.errors import PortalError
from core.views import Confirmation, confirmation_page, confirmed, form_errors, require

from .forms import TokenForm
from .models import ApiToken
from .tokens import token_create, token_revoke


@login_required
def token_list(request: HttpRequest) -> HttpResponse:
    """List the user's tokens and make one; the new token's text is shown on this answer only."""
    form = TokenForm(request.POST or None)
    made = None
    if request.method == "POST" and form.is_valid():
        day = form.cleaned_data["expires_at"]
        expires = (datetime.combine(day, time.min, tzinfo=UTC)
                   if day else None)
        try:
            token, text = token_create(owner=request.user, name=form.cleaned_data["name"],
                                       read_only=form.cleaned_data["read_only"],
                                       expires_at=expires)
        except ValidationError as exc:
            form_errors(form, exc)
        except PortalError as exc:
            form.add_error(None, str(exc))
        else:
            made = {"token": token, "text": text}
            form = TokenForm()
    tokens = ApiToken.objects.filter(owner=request.user).select_related("revoked_by")
    response = render(request, "api/tokens.html", {"tokens": tokens, "form": form,
                                                   "made": made})
    response["Cache-Control"] = "no-store"  # the new token never comes back from a cache
    return response


@login_required
@require_POST
def token_revoke_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Revoke one of the user's tokens (or anyone's, for an admin)."""
    token = get_object_or_404(ApiToken.objects.visible_to(request.user), pk=pk)
    require(request.user.has_perm("api.revoke_token", token))
    if not confirmed(request):
        return confirmation_page(request, Confirmation(
            title=f"Revoke the token {token.name}?",
            consequences=(
                f"Every script or program using {token.name} (vmp_{token.prefix}_…) is "
                "refused from now on. This cannot be undone: make a new token if needed.",),
            button="Revoke", back_url=reverse("tokens:token_list")))
    token_revoke(token=token, actor=request.user)
    messages.success(request, f"Token {token.name} revoked; it opens nothing any more.")
    if token.owner_id != request.user.pk:
        return redirect("admin:api_apitoken_changelist")
    return redirect("tokens:token_list")
