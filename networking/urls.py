"""URLs of the networking pages."""

from django.urls import path

from . import views

app_name = "networking"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("vlans/<int:pk>/", views.vlan_detail, name="vlan_detail"),
    path("public/", views.public_pool, name="public_pool"),
    path("public/nat-resync/", views.nat_resync, name="nat_resync"),
]
