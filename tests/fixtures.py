"""Fixtures of the portal's fast tier: a whole small site on libvirt's test driver."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from django.test import Client

from core.accounts.models import Organisation, Role, User
from hosts.models import Datastore, Host, Template
from networking.models import VLAN, SecurityDomain
from tests import factories as f

# Like the demo's networks: libvirt's dynamic leases stay below the portal's pool (.100 up).
PRIVATE_NETWORK_XML = (
    "<network><name>private</name><bridge name='virbr20'/>"
    "<ip address='10.20.0.1' netmask='255.255.255.0'>"
    "<dhcp><range start='10.20.0.2' end='10.20.0.99'/></dhcp></ip></network>"
)


@dataclass
class Site:
    """One organisation with an account per role, a host, a template and an IP pool."""

    org: Organisation
    other_org: Organisation
    student: User
    faculty: User
    orgadmin: User
    admin: User
    other_student: User
    other_faculty: User
    other_orgadmin: User
    host: Host
    datastore: Datastore
    template: Template
    vlan: VLAN
    domain: SecurityDomain
    vlan2: VLAN
    domain2: SecurityDomain
    users: dict[str, User] = field(default_factory=dict)

    def another_admin(self) -> User:
        """Return a second admin: nobody decides their own request, admins included."""
        return f.UserFactory(username="adm2", role=Role.ADMIN, organisation=self.org,
                             is_staff=True, is_superuser=True)

    def client(self, user: User | None) -> Client:
        """Return a test client logged in as the user (anonymous for None)."""
        c = Client()
        if user is not None:
            c.force_login(user)
        return c


@pytest.fixture(autouse=True)
def rrd_dir(settings, tmp_path):
    """Keep every test's RRD files in its own directory."""
    path = tmp_path / "rrd"
    settings.PORTAL_MONITOR = {**settings.PORTAL_MONITOR, "RRD_DIR": str(path)}
    return path


@pytest.fixture(autouse=True)
def fresh_test_driver():
    """Give every test libvirt's test driver in its initial state."""
    from hosts.virt import close_all

    close_all()
    yield
    close_all()


@pytest.fixture
def site(db) -> Site:  # noqa: ANN001
    """Build the small site every fast test starts from."""
    org = f.OrganisationFactory(name="Computer Science", slug="cs")
    other = f.OrganisationFactory(name="Physics", slug="phy")
    users = {
        "student": f.UserFactory(username="stu", role=Role.USER, organisation=org),
        "faculty": f.UserFactory(username="fac", role=Role.FACULTY, organisation=org),
        "orgadmin": f.UserFactory(username="oadm", role=Role.ORG_ADMIN, organisation=org),
        "admin": f.UserFactory(username="adm", role=Role.ADMIN, organisation=org,
                               is_staff=True, is_superuser=True),
        "other_student": f.UserFactory(username="pstu", role=Role.USER, organisation=other),
        "other_faculty": f.UserFactory(username="pfac", role=Role.FACULTY, organisation=other),
        "other_orgadmin": f.UserFactory(username="poadm", role=Role.ORG_ADMIN,
                                        organisation=other),
    }
    host = f.HostFactory(name="hv1")
    ds = f.DatastoreFactory(name="local", path="/srv/portal/local", hosts=[host])
    template = f.TemplateFactory(name="Debian", datastore=ds)
    # The template's image, as a standalone qcow2 in the datastore's pool on the test driver.
    from hosts.virt import Hypervisor

    hv = Hypervisor(host.uri)
    hv.ensure_pool(ds.pool_name, ds.path)
    hv.create_volume(ds.pool_name, template.image, 2 * 1024**3)
    vlan = f.VLANFactory(name="campus", tag=10)
    f.make_pool(vlan, 5)
    domain = f.SecurityDomainFactory(name="Research", vlan=vlan, organisations=[org])
    vlan2 = f.VLANFactory(name="private", tag=20, subnet="10.20.0.0/24", attach="tag",
                          network_name="private")
    hv.ensure_network(PRIVATE_NETWORK_XML)
    f.make_pool(vlan2, 3)
    domain2 = f.SecurityDomainFactory(name="Private", vlan=vlan2, organisations=[org])
    f.SecurityDomainFactory(name="Physics lab", vlan=vlan, organisations=[other])
    return Site(org=org, other_org=other, host=host, datastore=ds, template=template,
                vlan=vlan, domain=domain, vlan2=vlan2, domain2=domain2, users=users, **users)
