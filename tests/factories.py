"""Factories of the portal's models for tests."""

from __future__ import annotations

import factory

from core.accounts.models import Organisation, Role, User
from hosts.models import Datastore, Host, Template
from networking.models import VLAN, PrivateIP, PublicIP, SecurityDomain
from vms.models import RequestStage, VMRequest


class OrganisationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organisation
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Department {n}")
    slug = factory.Sequence(lambda n: f"dept-{n}")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")
    first_name = factory.LazyAttribute(lambda u: u.username.capitalize())
    role = Role.USER
    organisation = factory.SubFactory(OrganisationFactory)
    password = factory.PostGenerationMethodCall("set_password", "pass-word-123")

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):  # noqa: N805
        if create:
            obj.save()


class HostFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Host

    name = factory.Sequence(lambda n: f"host{n}")
    uri = "test:///default"
    vcpus = 8
    memory_mib = 16384
    memory_reserved_mib = 1024
    cpu_overcommit = 1
    accel = "test"


class DatastoreFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Datastore
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"store{n}")
    path = factory.Sequence(lambda n: f"/srv/portal/store{n}")

    @factory.post_generation
    def hosts(obj, create, extracted, **kwargs):  # noqa: N805
        if create and extracted:
            obj.hosts.set(extracted)


class TemplateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Template

    name = factory.Sequence(lambda n: f"Template {n}")
    datastore = factory.SubFactory(DatastoreFactory)
    image = "base.qcow2"
    min_vcpus = 1
    max_vcpus = 4
    min_memory_mib = 256
    max_memory_mib = 4096
    min_disk_gib = 1
    max_disk_gib = 20


class VLANFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = VLAN

    name = factory.Sequence(lambda n: f"vlan{n}")
    tag = factory.Sequence(lambda n: 100 + n)
    subnet = "192.168.122.0/24"
    network_name = "default"


def make_pool(vlan: VLAN, count: int, start: int = 100) -> list[PrivateIP]:
    """Add `count` private addresses with MACs to the VLAN."""
    base = vlan.network.network_address
    return [
        PrivateIP.objects.create(vlan=vlan, address=str(base + start + i),
                                 mac=f"52:54:00:00:{vlan.tag % 256:02x}:{start + i:02x}")
        for i in range(count)
    ]


class SecurityDomainFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SecurityDomain
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Domain {n}")
    vlan = factory.SubFactory("tests.factories.VLANFactory")

    @factory.post_generation
    def organisations(obj, create, extracted, **kwargs):  # noqa: N805
        if create and extracted:
            obj.organisations.set(extracted)


class VMRequestFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = VMRequest

    requester = factory.SubFactory(UserFactory)
    organisation = factory.LazyAttribute(lambda r: r.requester.organisation)
    name = factory.Sequence(lambda n: f"vm-{n}")
    template = factory.SubFactory(TemplateFactory)
    vcpus = 1
    memory_mib = 512
    disk_gib = 2
    purpose = "Coursework"
    stage = RequestStage.FACULTY


def make_public_pool(count: int, start: int = 10) -> list[PublicIP]:
    """Add `count` public addresses from the documentation range 203.0.113.0/24."""
    return [PublicIP.objects.create(address=f"203.0.113.{start + i}") for i in range(count)]
