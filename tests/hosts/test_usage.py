"""One sum of what VMs use: placement, host pages and datastore room read the same numbers."""

from __future__ import annotations

import pytest
from django.urls import reverse

from hosts.models import Host
from hosts.selectors import datastore_usage, host_usage, hosts_with_usage
from vms.models import ExtraDisk, VirtualMachine, VMState
from vms.selectors import datastore_with_room

pytestmark = pytest.mark.django_db


def make_vm(site, name, vcpus, memory, disk, state=VMState.RUNNING):
    return VirtualMachine.objects.create(
        name=name, owner=site.student, organisation=site.org, template=site.template,
        host=site.host, datastore=site.datastore, vcpus=vcpus, memory_mib=memory,
        disk_gib=disk, state=state)


def test_live_vms_count_and_deleted_ones_do_not(site):
    assert host_usage(site.host) == (0, 0)
    assert datastore_usage(site.datastore) == 0
    vm = make_vm(site, "a", 2, 1024, 10)
    make_vm(site, "b", 1, 512, 5)
    make_vm(site, "gone", 8, 8192, 80, state=VMState.DELETED)
    ExtraDisk.objects.create(vm=vm, datastore=site.datastore, size_gib=3)
    assert host_usage(site.host) == (3, 1536)
    host = hosts_with_usage(Host.objects.filter(pk=site.host.pk)).get()
    assert (host.vm_count, host.used_vcpus, host.used_memory) == (2, 3, 1536)
    assert datastore_usage(site.datastore) == 18


def test_the_host_page_and_the_dashboard_show_the_same_use(site):
    make_vm(site, "a", 2, 1024, 10)
    client = site.client(site.admin)
    listed = client.get(reverse("hosts:host_list")).context["hosts"].get()
    shown = client.get(reverse("hosts:host_detail", args=[site.host.pk])).context["host"]
    board = client.get(reverse("dashboard")).context["hosts"].get()
    for host in (listed, shown, board):
        assert (host.vm_count, host.used_vcpus, host.used_memory) == (1, 2, 1024)


def test_a_datastore_without_room_is_passed_over_with_its_free_space_named(site):
    site.datastore.capacity_gib = 20
    site.datastore.save()
    vm = make_vm(site, "a", 1, 512, 15)
    assert datastore_with_room(vm, 5) == site.datastore
    with pytest.raises(Exception, match="local has 5 GiB free"):
        datastore_with_room(vm, 6)
