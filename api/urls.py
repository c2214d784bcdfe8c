"""URLs of the API, under /api/v1/ (the version is part of the path)."""

from django.urls import path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)
from rest_framework.routers import SimpleRouter

from . import views_requests, views_vms

app_name = "api"

router = SimpleRouter()
router.register("vms", views_vms.VMViewSet, basename="vm")
router.register(r"vms/(?P<vm_pk>\d+)/snapshots", views_vms.SnapshotViewSet,
                basename="snapshot")
router.register("operations", views_vms.OperationViewSet, basename="operation")
router.register("requests", views_requests.VMRequestViewSet, basename="request")
router.register("approvals", views_requests.ApprovalViewSet, basename="approval")
router.register("templates", views_requests.TemplateViewSet, basename="template")
router.register("security-domains", views_requests.SecurityDomainViewSet,
                basename="security-domain")

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api:schema"), name="redoc"),
    *router.urls,
]
