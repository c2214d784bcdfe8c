"""Top-level URLs of the portal."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path

from core.auth import PortalAuthenticationForm

from . import views

admin.site.site_header = "VM portal administration"
admin.site.site_title = "VM portal"

handler404 = "portal.views.page_not_found"
handler403 = "portal.views.permission_denied"
handler500 = "portal.views.server_error"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("accounts/login/", auth_views.LoginView.as_view(
        redirect_authenticated_user=True, authentication_form=PortalAuthenticationForm),
        name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("hosts/", include("hosts.urls")),
    path("network/", include("networking.urls")),
    path("people/", include("core.accounts.urls")),
    path("", include("monitoring.urls")),
    path("admin/", admin.site.urls),
    re_path(r"^api/(?P<version>v1)/", include("api.urls")),
    path("tokens/", include("api.pages")),
    path("", include("console.urls")),  # before vms: its vms/<pk>/<action>/ is wider
    path("", include("vms.urls")),
]
