"""The VM page's Migrate card: admins only, POST with CSRF, best fit or a listed host, cancel."""

from __future__ import annotations

import pytest
from django.urls import reverse

from operations.models import Operation, OperationKind
from tests.vms.test_lifecycle import install
from tests.vms.test_migration import second  # noqa: F401  (the second host fixture)

pytestmark = pytest.mark.django_db


def test_admins_see_the_migrate_card_with_the_other_hosts(site, second,  # noqa: F811
                                                          django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    page = site.client(site.admin).get(reverse("vms:vm_detail", args=[vm.pk])).content.decode()
    assert 'id="migrate-form"' in page and 'name="csrfmiddlewaretoken"' in page
    assert f'<option value="{second.pk}">hv2</option>' in page
    assert f'<option value="{site.host.pk}">' not in page
    for user in (site.student, site.orgadmin):
        page = site.client(user).get(reverse("vms:vm_detail", args=[vm.pk])).content.decode()
        assert "vm-migrate" not in page


def test_migrate_to_the_best_fit_queues_and_shows_the_operation(
        site, second, django_capture_on_commit_callbacks):  # noqa: F811
    vm, _ = install(site, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        answer = site.client(site.admin).post(reverse("vms:vm_migrate", args=[vm.pk]),
                                              {"destination": ""})
    op = Operation.objects.get(vm=vm, kind=OperationKind.MIGRATE)
    assert answer.status_code == 302 and answer["Location"].endswith(f"?op={op.pk}")
    assert op.host == second
    page = site.client(site.admin).get(reverse("vms:vm_detail", args=[vm.pk])).content.decode()
    assert 'id="migrate-cancel"' in page and 'id="migrate-form"' not in page
    with django_capture_on_commit_callbacks(execute=False):
        site.client(site.admin).post(reverse("vms:operation_cancel", args=[op.pk]))
    op.refresh_from_db()
    assert op.arguments["cancel"] == "adm"


def test_a_host_not_listed_is_refused_and_nothing_queued(site, second,  # noqa: F811
                                                         django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    client = site.client(site.admin)
    answer = client.post(reverse("vms:vm_migrate", args=[vm.pk]),
                         {"destination": str(site.host.pk)}, follow=True)
    assert "Choose one of the hosts listed" in answer.content.decode()
    assert not Operation.objects.filter(vm=vm, kind=OperationKind.MIGRATE).exists()
    assert client.get(reverse("vms:vm_migrate", args=[vm.pk])).status_code == 405
