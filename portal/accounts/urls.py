"""URLs of the people and organisation pages."""

from django.urls import path

from . import views

app_name = "accounts"

urlpatterns = [
    path("", views.people_list, name="people_list"),
    path("<int:pk>/", views.person_detail, name="person_detail"),
    path("organisations/", views.organisation_list, name="organisation_list"),
    path("faculty-search/", views.faculty_search, name="faculty_search"),
]
