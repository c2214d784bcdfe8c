"""Contract tests: schemathesis calls every operation of the live schema on the WSGI app.

For each endpoint it sends data the schema allows and data it forbids, as a student with a
VM and a pending request, and checks: no 500, every response matches the schema (status,
content type, body), and nothing the schema declares invalid is accepted.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from tests.api.conftest import token_client

# The live schema, as the running app serves it (its view reads no database).
schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", get_wsgi_application())
EXAMPLES = 15


@pytest.fixture(autouse=True)
def connections_kept():
    """Keep the test's database connection across calls, as Django's own test client does.

    The WSGI handler closes connections it deems old at each request's start and end; in a
    test that holds one transaction, that would close it (PostgreSQL: "the connection is
    closed") between the calls schemathesis makes.
    """
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def bearer(site, student_vm):
    """Return the student's token header, with a VM and a pending request to act on."""
    from vms.services.workflow import vm_request_create

    vm_request_create(requester=site.student, name="waiting", template=site.template,
                      vcpus=1, memory_mib=512, disk_gib=2, purpose="course",
                      faculty=site.faculty, security_domain=site.domain)
    return {"Authorization": token_client(site.student)._credentials["HTTP_AUTHORIZATION"]}


@pytest.mark.django_db
@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_every_endpoint_keeps_its_contract(case, bearer, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):  # nothing is run by a worker
        # Positive data may still break rules no schema states (a template's size bounds, a
        # name in use, the approval chain): those answer 400 or 409 and are not failures.
        case.call_and_validate(headers=bearer, excluded_checks=[positive_data_acceptance])


@pytest.fixture
def admin_bearer(site, student_vm):
    """Return another admin's token header: the student's request and VM are theirs to decide."""
    from vms.services.workflow import vm_request_create

    vm_request_create(requester=site.student, name="waiting", template=site.template,
                      vcpus=1, memory_mib=512, disk_gib=2, purpose="course",
                      faculty=site.faculty, security_domain=site.domain)
    return {"Authorization": token_client(site.admin)._credentials["HTTP_AUTHORIZATION"]}


# What only admins reach (hosts, pools) or decide (approvals): again with an admin's token.
@pytest.mark.django_db
@schema.include(path_regex=r"^/api/v1/(hosts|vlans|public-ips|approvals|requests)").parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_admin_endpoints_keep_their_contract(case, admin_bearer,
                                             django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        case.call_and_validate(headers=admin_bearer, excluded_checks=[positive_data_acceptance])
