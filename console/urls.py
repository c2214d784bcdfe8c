"""URLs of the console pages and their tokens."""

from django.urls import path

from . import views

app_name = "console"

urlpatterns = [
    path("vms/<int:pk>/console/", views.console_page, {"kind": "vnc"}, name="vnc"),
    path("vms/<int:pk>/serial/", views.console_page, {"kind": "serial"}, name="serial"),
    path("vms/<int:pk>/console/token/", views.console_token, {"kind": "vnc"}, name="vnc_token"),
    path("vms/<int:pk>/serial/token/", views.console_token, {"kind": "serial"},
         name="serial_token"),
]
