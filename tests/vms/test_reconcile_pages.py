"""The host page's Reconcile findings card and the pages behind its buttons."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from hosts.virt import Hypervisor
from operations.models import Operation, OperationKind
from tests.vms.faults_helpers import install
from vms.services.reconcile import host_reconcile

pytestmark = pytest.mark.django_db


@pytest.fixture
def findings(site, django_capture_on_commit_callbacks):
    """A host with an orphan domain ("test", the driver's own), a missing VM, an orphan volume."""
    vm, _ = install(site, django_capture_on_commit_callbacks)
    hv = Hypervisor(site.host.uri)
    hv.undefine_domain(vm.domain_name)
    hv.create_volume(site.datastore.pool_name, "left.qcow2", 1024**3)
    host_reconcile(host=site.host)
    return vm


def test_the_host_page_lists_each_finding_with_its_actions(site, findings):
    page = site.client(site.admin).get(reverse("hosts:host_detail", args=[site.host.pk]))
    html = page.content.decode()
    card = html[html.index('id="reconcile-findings"'):]
    assert 'data-finding="domain" data-name="test"' in card
    assert reverse("vms:host_domain_adopt", args=[site.host.pk]) + "?domain=test" in card
    assert f'data-finding="missing" data-name="{findings.name}"' in card
    assert reverse("vms:vm_recreate", args=[findings.pk]) in card
    assert reverse("vms:vm_mark_lost", args=[findings.pk]) in card
    assert 'data-name="/srv/portal/local/left.qcow2"' in card
    assert "Found at the last reconcile" in card
    # Destructive ones ask first (data-confirm), everything posts with a CSRF token.
    assert card.count("data-confirm=") == 3
    assert card.count("csrfmiddlewaretoken") == 4
    assert not re.search(r"\sstyle=|\son[a-z]+=", card)


def test_deleting_a_domain_asks_first_and_changes_nothing_until_confirmed(site, findings):
    client = site.client(site.admin)
    url = reverse("vms:host_domain_delete", args=[site.host.pk])
    page = client.post(url, {"domain": "test"})
    assert page.status_code == 200 and b"Delete domain test on hv1?" in page.content
    assert not Operation.objects.filter(kind=OperationKind.DOMAIN_REMOVE).exists()
    # Its Confirm posts the finding again, with the confirmation.
    form = page.content.decode().split('id="confirm-form"')[1].split("</form>")[0]
    assert '<input type="hidden" name="domain" value="test">' in form
    assert '<input type="hidden" name="confirmed" value="1">' in form
    done = client.post(url, {"domain": "test", "confirmed": "1"}, follow=True)
    op = Operation.objects.get(kind=OperationKind.DOMAIN_REMOVE)
    assert op.arguments == {"domain": "test"} and op.host == site.host
    assert b"Deletion of domain test queued." in done.content


def test_marking_lost_asks_first_and_recreating_does_not(site, findings):
    client = site.client(site.admin)
    page = client.post(reverse("vms:vm_mark_lost", args=[findings.pk]))
    assert page.status_code == 200 and b"Mark lab1 as lost?" in page.content
    assert not Operation.objects.filter(kind=OperationKind.VM_LOST).exists()
    client.post(reverse("vms:vm_recreate", args=[findings.pk]), {"start": ["0", "1"]})
    assert Operation.objects.get(kind=OperationKind.VM_RECREATE).arguments == {"start": True}


def test_the_adopt_form_offers_the_orphan_domains_and_queues_the_adoption(site, findings):
    client = site.client(site.admin)
    url = reverse("vms:host_domain_adopt", args=[site.host.pk])
    form = client.get(url + "?domain=test").content.decode()
    assert '<option value="test" selected>' in form
    done = client.post(url, {"domain": "test", "owner": site.student.pk,
                             "template": site.template.pk}, follow=True)
    op = Operation.objects.get(kind=OperationKind.DOMAIN_ADOPT)
    assert op.arguments == {"domain": "test", "owner": site.student.pk,
                            "template": site.template.pk}
    assert b"Adoption of test queued" in done.content
    # Asking twice for the same finding is refused while the first is under way.
    again = client.post(url, {"domain": "test", "owner": site.student.pk,
                              "template": site.template.pk}, follow=True)
    assert b"already under way" in again.content


def test_a_finding_not_reported_is_refused_in_words(site, findings):
    done = site.client(site.admin).post(
        reverse("vms:host_volume_delete", args=[site.host.pk]),
        {"volume": "/etc/passwd", "confirmed": "1"}, follow=True)
    assert b"not among the orphan volumes" in done.content
    assert not Operation.objects.filter(kind=OperationKind.VOLUME_REMOVE).exists()
