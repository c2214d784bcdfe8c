"""URLs of the API tokens page (under /tokens/)."""

from django.urls import path

from . import views_tokens

app_name = "tokens"

urlpatterns = [
    path("", views_tokens.token_list, name="token_list"),
    path("<int:pk>/revoke/", views_tokens.token_revoke_view, name="token_revoke"),
]
