"""URLs of the people and organisation pages."""

from django.urls import path

from . import views

app_name = "accounts"

urlpatterns = [
    path("", views.people_list, name="people_list"),
    path("<int:pk>/", views.person_detail, name="person_detail"),
    path("<int:pk>/unlock/", views.person_unlock, name="person_unlock"),
    path("organisations/", views.organisation_list, name="organisation_list"),
    path("faculty-search/", views.faculty_search, name="faculty_search"),
    path("keys/", views.ssh_key_list, name="ssh_key_list"),
    path("keys/<int:pk>/delete/", views.ssh_key_delete_view, name="ssh_key_delete"),
]
