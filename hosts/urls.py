"""URLs of the host pages."""

from django.urls import path

from . import views

app_name = "hosts"

urlpatterns = [
    path("", views.host_list, name="host_list"),
    path("<int:pk>/", views.host_detail, name="host_detail"),
    path("<int:pk>/refresh/", views.host_refresh, name="host_refresh"),
]
