"""URLs of usage graphs: one per object, metric, period and format."""

from django.urls import path

from . import views

app_name = "monitoring"

urlpatterns = [
    path("vms/<int:pk>/usage/", views.vm_usage, name="vm_usage"),
    path("vms/<int:pk>/graphs/<str:metric>/<str:period>.png", views.vm_graph, {"fmt": "png"},
         name="vm_graph_png"),
    path("vms/<int:pk>/graphs/<str:metric>/<str:period>.svg", views.vm_graph, {"fmt": "svg"},
         name="vm_graph_svg"),
    path("hosts/<int:pk>/usage/", views.host_usage, name="host_usage"),
    path("hosts/<int:pk>/graphs/<str:metric>/<str:period>.png", views.host_graph,
         {"fmt": "png"}, name="host_graph_png"),
    path("hosts/<int:pk>/graphs/<str:metric>/<str:period>.svg", views.host_graph,
         {"fmt": "svg"}, name="host_graph_svg"),
]
