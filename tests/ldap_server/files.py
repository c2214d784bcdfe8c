"""What a throw-away slapd starts from: a test CA and certificates, cn=config and the seed LDIF.

`SlapdFiles` is mixed into `SlapdServer` (tests/ldap_server/server.py): it reads the server's
paths, DNs and passwords. The people, groups and organisations seeded are listed here.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

MODULE_DIR = Path("/usr/lib/ldap")
SCHEMA_DIR = Path("/etc/ldap/schema")
SCHEMAS = ("core", "cosine", "nis", "inetorgperson")
BASE_DN = "dc=example,dc=org"


@dataclass(frozen=True)
class Person:
    """One seeded directory user."""

    uid: str
    given_name: str
    surname: str
    organisation: str
    password: str
    groups: tuple[str, ...] = ()

    @property
    def mail(self) -> str:
        return f"{self.uid}@example.org"


PEOPLE: dict[str, Person] = {
    p.uid: p
    for p in (
        Person("alice", "Alice", "Archer", "Computer Science", "alice-Secret-1"),
        Person("fred", "Fred", "Faraday", "Computer Science", "fred-Secret-2",
               ("portal-faculty",)),
        Person("olga", "Olga", "Ortiz", "Computer Science", "olga-Secret-3",
               ("portal-orgadmins",)),
        Person("adam", "Adam", "Adler", "IT Services", "adam-Secret-4", ("portal-admins",)),
        Person("paula", "Paula", "Pauli", "Physics", "paula-Secret-5"),
    )
}
GROUPS = ("portal-faculty", "portal-orgadmins", "portal-admins")
ORGANISATIONS = ("Computer Science", "Physics", "IT Services")


def ssha(password: str) -> str:
    """Return an RFC 2307 `{SSHA}` userPassword value for the password."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt, usedforsecurity=False).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _run(argv: list[str], timeout: float = 60) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {result.returncode}:\n{result.stderr or result.stdout}"
        )


def _ldif(entries: list[list[tuple[str, str]]]) -> str:
    """Render entries given as (attribute, value) lists; values here are plain ASCII."""
    return "\n".join("".join(f"{a}: {v}\n" for a, v in entry) for entry in entries)


class SlapdFiles:
    """Build the TLS files, the cn=config LDIF and the seed LDIF of a SlapdServer."""

    def _openssl(self, *args: str) -> None:
        _run(["openssl", *args])

    def _make_ca(self, name: str, cert: Path, key: Path) -> None:
        self._openssl(
            "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "3", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )

    def _make_certificates(self) -> None:
        ca_key = self.tls_dir / "ca.key"
        self._make_ca("Portal test CA", self.ca_cert, ca_key)
        self._make_ca("Unrelated test CA", self.other_ca_cert, self.tls_dir / "other-ca.key")
        csr = self.tls_dir / "server.csr"
        self._openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(self.server_key), "-out", str(csr), "-subj", "/CN=localhost",
        )
        extensions = self.tls_dir / "server.ext"
        extensions.write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        )
        self._openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.ca_cert), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(self.server_cert), "-days", "3",
            "-extfile", str(extensions),
        )
        os.chmod(self.server_key, 0o600)

    def _config_ldif(self) -> str:
        modules = [("olcModuleLoad", "{0}ppolicy")]
        if (MODULE_DIR / "back_mdb.so").exists():  # built in on some builds, a module on Debian
            modules.insert(0, ("olcModuleLoad", "{0}back_mdb"))
            modules[1] = ("olcModuleLoad", "{1}ppolicy")
        entries: list[list[tuple[str, str]]] = [
            [
                ("dn", "cn=config"),
                ("objectClass", "olcGlobal"),
                ("cn", "config"),
                ("olcPidFile", str(self.root / "slapd.pid")),
                ("olcArgsFile", str(self.root / "slapd.args")),
                ("olcLogLevel", "none"),
                ("olcTLSCACertificateFile", str(self.ca_cert)),
                ("olcTLSCertificateFile", str(self.server_cert)),
                ("olcTLSCertificateKeyFile", str(self.server_key)),
                ("olcTLSVerifyClient", "never"),
            ],
            [
                ("dn", "cn=module{0},cn=config"),
                ("objectClass", "olcModuleList"),
                ("cn", "module{0}"),
                ("olcModulePath", str(MODULE_DIR)),
                *modules,
            ],
            [("dn", "cn=schema,cn=config"), ("objectClass", "olcSchemaConfig"),
             ("cn", "schema")],
        ]
        text = _ldif(entries)
        for schema in SCHEMAS:
            text += "\n" + (SCHEMA_DIR / f"{schema}.ldif").read_text().strip() + "\n"
        database = [
            [
                ("dn", "olcDatabase={-1}frontend,cn=config"),
                ("objectClass", "olcDatabaseConfig"),
                ("objectClass", "olcFrontendConfig"),
                ("olcDatabase", "{-1}frontend"),
            ],
            [
                ("dn", "olcDatabase={0}config,cn=config"),
                ("objectClass", "olcDatabaseConfig"),
                ("olcDatabase", "{0}config"),
                ("olcAccess", "{0}to * by * none"),
            ],
            [
                ("dn", "olcDatabase={1}mdb,cn=config"),
                ("objectClass", "olcDatabaseConfig"),
                ("objectClass", "olcMdbConfig"),
                ("olcDatabase", "{1}mdb"),
                ("olcDbDirectory", str(self.data_dir)),
                ("olcDbMaxSize", str(64 * 1024 * 1024)),
                ("olcSuffix", BASE_DN),
                ("olcRootDN", self.admin_dn),
                ("olcRootPW", ssha(self.admin_password)),
                ("olcDbIndex", "objectClass eq"),
                ("olcDbIndex", "uid eq"),
                ("olcDbIndex", "member eq"),
                # Passwords are only ever compared; everything else is for logged-in readers.
                ("olcAccess", "{0}to attrs=userPassword by self write by anonymous auth "
                              "by * none"),
                ("olcAccess", "{1}to * by users read by * none"),
            ],
            [
                ("dn", "olcOverlay={0}ppolicy,olcDatabase={1}mdb,cn=config"),
                ("objectClass", "olcOverlayConfig"),
                ("objectClass", "olcPPolicyConfig"),
                ("olcOverlay", "{0}ppolicy"),
                ("olcPPolicyDefault", f"cn=default,ou=policies,{BASE_DN}"),
            ],
        ]
        return text + "\n" + _ldif(database)

    def _seed_ldif(self) -> str:
        def ou(name: str, parent: str = BASE_DN) -> list[tuple[str, str]]:
            return [("dn", f"ou={name},{parent}"), ("objectClass", "organizationalUnit"),
                    ("ou", name)]

        entries: list[list[tuple[str, str]]] = [
            [("dn", BASE_DN), ("objectClass", "dcObject"), ("objectClass", "organization"),
             ("dc", "example"), ("o", "Example University")],
            ou("people"), ou("groups"), ou("organisations"), ou("services"), ou("policies"),
            [("dn", self.bind_dn), ("objectClass", "organizationalRole"),
             ("objectClass", "simpleSecurityObject"), ("cn", "portal"),
             ("description", "the VM portal's read-only account"),
             ("userPassword", ssha(self.bind_password))],
            [("dn", f"cn=default,ou=policies,{BASE_DN}"), ("objectClass", "device"),
             ("objectClass", "pwdPolicy"), ("cn", "default"),
             ("pwdAttribute", "userPassword"), ("pwdLockout", "TRUE")],
        ]
        entries += [ou(name, f"ou=organisations,{BASE_DN}") for name in ORGANISATIONS]
        for person in PEOPLE.values():
            entries.append([
                ("dn", self.user_dn(person.uid)),
                ("objectClass", "inetOrgPerson"),
                ("uid", person.uid),
                ("cn", f"{person.given_name} {person.surname}"),
                ("givenName", person.given_name),
                ("sn", person.surname),
                ("mail", person.mail),
                ("ou", person.organisation),
                ("userPassword", ssha(person.password)),
            ])
        for group in GROUPS:
            members = [p.uid for p in PEOPLE.values() if group in p.groups]
            entries.append([
                ("dn", self.group_dn(group)),
                ("objectClass", "groupOfNames"),
                ("cn", group),
                *[("member", self.user_dn(uid)) for uid in members],
            ])
        return _ldif(entries)
