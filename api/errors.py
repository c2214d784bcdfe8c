"""Errors as JSON with the right status: 400 field by field, 404, 409 and 429.

Every error body is `{"detail": "...", "errors": {"field": ["..."]}}` (`errors` only for 400).
A `PortalError` (the services' refusal in the user's words: another operation is under way,
the VM is in the wrong state, one's own request) answers 409; a Django `ValidationError` from
a service answers 400 with its fields; anything out of the caller's reach answers 404, as on
the pages.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from core.errors import PortalError

NON_FIELD = "non_field_errors"


class Conflict(exceptions.APIException):
    """The action cannot be done now: the message says why (409)."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "The action cannot be done now."
    default_code = "conflict"


def _flatten(detail: object) -> list[str]:
    if isinstance(detail, dict):
        return [m for v in detail.values() for m in _flatten(v)]
    if isinstance(detail, list):
        return [m for v in detail for m in _flatten(v)]
    return [str(detail)]


def _field_errors(detail: object) -> dict[str, list[str]]:
    if isinstance(detail, dict):
        return {str(k): _flatten(v) for k, v in detail.items()}
    return {NON_FIELD: _flatten(detail)}


def django_validation_error(exc: DjangoValidationError) -> exceptions.ValidationError:
    """Return a DRF ValidationError with the same messages, by field where it has them."""
    if hasattr(exc, "error_dict"):
        return exceptions.ValidationError(
            {(k if k != "__all__" else NON_FIELD): v for k, v in exc.message_dict.items()})
    return exceptions.ValidationError({NON_FIELD: exc.messages})


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """Map the services' errors, then shape every error body the same way."""
    if isinstance(exc, PortalError):
        exc = Conflict(str(exc))
    elif isinstance(exc, DjangoValidationError):
        exc = django_validation_error(exc)
    elif isinstance(exc, Http404 | DjangoPermissionDenied):
        exc = exceptions.NotFound("Not found.")
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = _field_errors(exc.detail)
        first = next(iter(errors.values()), ["Invalid input."])
        response.data = {"detail": first[0] if len(errors) == 1 and len(first) == 1
                         else "The request has errors; see each field.", "errors": errors}
    elif not isinstance(response.data, dict) or "detail" not in response.data:
        response.data = {"detail": " ".join(_flatten(response.data))}
    else:
        response.data = {"detail": str(response.data["detail"])}
    return response
