"""A throw-away OpenLDAP server (Debian's slapd, mdb backend) for the `ldap` test tier.

`SlapdServer` builds everything in its own temporary directory: a test CA and a server
certificate for 127.0.0.1 and localhost (plus an unrelated CA for wrong-CA tests), a `slapd.d`
cn=config made with `slapadd -n0`, and an mdb database seeded offline with `slapadd` from an
LDIF of people, groups and organisations. slapd runs in the foreground (`-d 0`) under Popen on
a free loopback port, answers plain LDAP and StartTLS there (and ldaps on a second port), and
is stopped and started again on the same ports with the same data. The session fixture `slapd`
yields one server; `reset()` brings back the seed data and a running server between tests.

Directory layout (suffix `dc=example,dc=org`):

    ou=people         alice, fred, olga, adam, paula (inetOrgPerson; `ou` = organisation)
    ou=groups         cn=portal-faculty, cn=portal-orgadmins, cn=portal-admins (groupOfNames)
    ou=organisations  Computer Science, Physics, IT Services (organizationalUnit)
    ou=services       cn=portal (the read-only account the portal binds as)
    ou=policies       cn=default (ppolicy; `disable_user` locks an account with it)
"""

from tests.ldap_server.files import PEOPLE, Person
from tests.ldap_server.server import SlapdServer, slapd

__all__ = ["PEOPLE", "Person", "SlapdServer", "slapd"]
