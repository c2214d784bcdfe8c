"""The OpenAPI description's shared parts: the token scheme and the error bodies."""

from __future__ import annotations

from django import forms
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions, serializers


class TokenScheme(OpenApiAuthenticationExtension):
    """Describe `Authorization: Bearer vmp_…` in the schema."""

    target_class = "api.authentication.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: object) -> dict:
        """Return the HTTP bearer scheme of personal tokens."""
        return {"type": "http", "scheme": "bearer", "bearerFormat": "vmp_<prefix>_<secret>",
                "description": "A personal API token, made on your API tokens page."}


class ErrorSerializer(serializers.Serializer):
    """Every error: a sentence, and for 400 the messages of each field."""

    detail = serializers.CharField()
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()),
                                   required=False)


ERRORS_READ = {401: ErrorSerializer, 403: ErrorSerializer, 404: ErrorSerializer,
               429: ErrorSerializer}
ERRORS = {400: ErrorSerializer, **ERRORS_READ, 409: ErrorSerializer}


def form_checked(form: forms.Form, rename: dict[str, str] | None = None) -> dict:
    """Return the page form's cleaned data, or raise its errors field by field (400)."""
    if form.is_valid():
        return form.cleaned_data
    rename = rename or {}
    raise exceptions.ValidationError({
        ("non_field_errors" if field == "__all__" else rename.get(field, field)): messages
        for field, messages in form.errors.items()})


ERROR_REF = {"$ref": "#/components/schemas/Error"}
ERROR_WORDS = {"400": "Invalid input, field by field", "401": "No valid token or session",
               "403": "Not allowed: a read-only token writing, or CSRF missing",
               "404": "Not found, or out of the caller's reach",
               "409": "Refused now: another operation is under way, or the state forbids it",
               "429": "Too many calls with this token; wait and try again"}


def add_error_responses(result: dict, generator: object, request: object, public: bool) -> dict:
    """Declare the JSON errors every operation may answer, and that an empty filter means any.

    A drf-spectacular post-processing hook.
    """
    result.setdefault("components", {}).setdefault("schemas", {}).setdefault("Error", {
        "type": "object", "required": ["detail"],
        "properties": {"detail": {"type": "string"},
                       "errors": {"type": "object", "additionalProperties": {
                           "type": "array", "items": {"type": "string"}}}}})
    for path, methods in result.get("paths", {}).items():
        public_page = path.endswith(("/schema/", "/docs/", "/redoc/"))
        for method, operation in methods.items():
            for parameter in operation.get("parameters", []):
                enum = parameter.get("schema", {}).get("enum")
                if parameter.get("in") == "query" and enum and "" not in enum:
                    enum.append("")  # an empty choice means any, as the pages' "All"
            codes = ["400", "429"] if public_page else ["400", "401", "403", "404", "429"]
            if method not in ("get", "head", "options") and not public_page:
                codes.append("409")
            for code in codes:
                operation.setdefault("responses", {}).setdefault(code, {
                    "content": {"application/json": {"schema": ERROR_REF}},
                    "description": ERROR_WORDS[code]})
    return result
