"""Every API route, with each of its methods, for every role and for a read-only token."""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from tests.api.conftest import token_client
from tests.api.matrix import API_MATRIX, ROLES
from tests.portal.test_permission_matrix import objects, url_names  # noqa: F401 - a fixture

KWARGS = {
    "vm": lambda o: {"pk": o["vm"].pk},
    "snapshot": lambda o: {"vm_pk": o["vm"].pk, "pk": o["snapshot"].pk},
    "snapshots": lambda o: {"vm_pk": o["vm"].pk},
    "vm_extra": lambda o: {"vm_pk": o["vm"].pk},
    "disk": lambda o: {"vm_pk": o["vm"].pk, "pk": o["disk"].pk},
    "host": lambda o: {"pk": o["host"].pk},
    "vlan": lambda o: {"pk": o["vlan"].pk},
    "addresses": lambda o: {"vlan_pk": o["vlan"].pk},
    "address": lambda o: {"vlan_pk": o["vlan"].pk, "pk": o["address"].pk},
    "public_ip": lambda o: {"pk": o["public_ip"].pk},
    "operation": lambda o: {"pk": o["operation"].pk},
    "request": lambda o: {"pk": o["request"].pk},
    "template": lambda o: {"pk": o["template"].pk},
    "domain": lambda o: {"pk": o["domain"].pk},
}


def test_the_matrix_lists_every_route_and_method():
    from api.urls import router

    listed = {name for name, _, _ in API_MATRIX}
    assert {n for n in url_names() if n.startswith("api:")} == listed
    methods = {}
    for _prefix, viewset, basename in router.registry:
        for url in router.get_routes(viewset):
            for method, action in url.mapping.items():
                if hasattr(viewset, action):
                    name = f"api:{url.name.format(basename=basename)}"
                    methods.setdefault(name, set()).add(method)
    for name, offered in methods.items():
        assert {m for n, m, _ in API_MATRIX if n == name} == offered, name


def client_for(site, role):
    if role == "anon":
        return APIClient()
    if role == "readonly":
        return token_client(site.student, read_only=True)
    return token_client(site.users[role])


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("key", sorted(API_MATRIX), ids=lambda k: f"{k[0]}-{k[1]}")
def test_api_matrix(site, objects, django_capture_on_commit_callbacks, key, role):  # noqa: F811
    name, method, kind = key
    from networking.models import PublicIP

    objects = {**objects, "template": site.template, "domain": site.domain,
               "address": site.vlan.addresses.first(),
               "public_ip": PublicIP.objects.create(address="198.51.100.7")}
    kwargs = {"version": "v1", **(KWARGS[kind](objects) if kind else {})}
    url = reverse(name, kwargs=kwargs)
    data = {"reason": "matrix"} if name.startswith("api:request-") else {"name": "matrix"}
    with django_capture_on_commit_callbacks(execute=False):
        response = getattr(client_for(site, role), method)(url, data, format="json")
    assert response.status_code == API_MATRIX[key][role], (
        name, method, role, response.status_code, getattr(response, "data", None))
