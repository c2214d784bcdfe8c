"""URLs of the API, under /api/v1/ (the version is part of the path)."""

from csp.decorators import csp_update
from django.http import HttpRequest, JsonResponse
from django.urls import path, re_path, reverse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)
from rest_framework.routers import SimpleRouter

from . import views_more, views_requests, views_vms

app_name = "api"


@csrf_exempt  # a 404 for every method: nothing changes, no form to protect
def not_found(request: HttpRequest, *args: object, **kwargs: object) -> JsonResponse:
    """Answer any other path under /api/v1/ with the API's JSON 404, not the HTML page."""
    return JsonResponse({"detail": "Not found."}, status=404)


# The lists a client starts from, named as in the index (`api_root`).
INDEX = {"vms": "api:vm-list", "operations": "api:operation-list",
         "requests": "api:request-list", "approvals": "api:approval-list",
         "templates": "api:template-list", "security_domains": "api:security-domain-list",
         "hosts": "api:host-list", "vlans": "api:vlan-list", "public_ips": "api:public-ip-list"}


@csrf_exempt  # GET only; any other method is refused without a change
def api_root(request: HttpRequest, version: str = "v1") -> JsonResponse:
    """Answer /api/v1/ with where to start: the schema, its pages and each list's URL.

    Public, as the schema is: it names URLs, never data (each list answers by its own rules).
    """
    if request.method not in ("GET", "HEAD"):
        return JsonResponse({"detail": f'Method "{request.method}" not allowed.'}, status=405,
                            headers={"Allow": "GET, HEAD"})
    def here(route: str) -> str:
        return request.build_absolute_uri(reverse(route, kwargs={"version": version}))

    return JsonResponse({
        "schema": here("api:schema"), "docs": here("api:docs"), "redoc": here("api:redoc"),
        "resources": {name: here(route) for name, route in INDEX.items()},
        "authentication": "Authorization: Bearer <token>; make one on /tokens/ "
                          "(your name → API tokens).",
    })


router = SimpleRouter()
router.register("vms", views_vms.VMViewSet, basename="vm")
router.register(r"vms/(?P<vm_pk>\d+)/snapshots", views_vms.SnapshotViewSet,
                basename="snapshot")
router.register(r"vms/(?P<vm_pk>\d+)", views_more.VMExtrasViewSet, basename="vm-extra")
router.register(r"vms/(?P<vm_pk>\d+)/disks", views_more.DiskViewSet, basename="disk")
router.register("operations", views_vms.OperationViewSet, basename="operation")
router.register("requests", views_requests.VMRequestViewSet, basename="request")
router.register("approvals", views_requests.ApprovalViewSet, basename="approval")
router.register("templates", views_requests.TemplateViewSet, basename="template")
router.register("security-domains", views_requests.SecurityDomainViewSet,
                basename="security-domain")
router.register("hosts", views_more.HostViewSet, basename="host")
router.register("vlans", views_more.VLANViewSet, basename="vlan")
router.register(r"vlans/(?P<vlan_pk>\d+)/addresses", views_more.AddressViewSet,
                basename="address")
router.register("public-ips", views_more.PublicIPViewSet, basename="public-ip")

urlpatterns = [
    path("", api_root, name="root"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
    # Redoc runs its search in a worker it makes from a blob: URL, on this page only.
    path("redoc/", csp_update({"worker-src": ["'self'", "blob:"]})(
        SpectacularRedocView.as_view(url_name="api:schema")), name="redoc"),
    *router.urls,
    re_path(r"", not_found),  # last: every other path, whatever the method
]
