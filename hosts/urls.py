"""URLs of the host pages."""

from django.urls import path

from . import views

app_name = "hosts"

urlpatterns = [
    path("", views.host_list, name="host_list"),
    path("<int:pk>/", views.host_detail, name="host_detail"),
    path("<int:pk>/refresh/", views.host_refresh, name="host_refresh"),
    path("<int:pk>/maintenance/", views.host_maintenance, name="host_maintenance"),
    path("<int:pk>/maintenance/leave/", views.host_maintenance_leave,
         name="host_maintenance_leave"),
    path("<int:pk>/evacuate/", views.host_evacuate, name="host_evacuate"),
    path("<int:pk>/mark-up/", views.host_mark_up, name="host_mark_up"),
    path("<int:pk>/power/on/", views.host_power_on, name="host_power_on"),
    path("<int:pk>/power/off/", views.host_power_off, name="host_power_off"),
]
