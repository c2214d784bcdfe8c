"""The throw-away slapd itself: start, stop, pause and reset it, change its directory, and the
session fixture `slapd` (see tests/ldap_server/__init__.py)."""

from __future__ import annotations

import contextlib
import ctypes
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ldap_server.files import BASE_DN, GROUPS, PEOPLE, SlapdFiles, _run, ssha

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
# pwdAccountLockedTime value meaning "locked until an administrator unlocks it".
PERMANENTLY_LOCKED = "000001010000Z"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """Make the child receive SIGTERM if the test process dies without a teardown."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class SlapdServer(SlapdFiles):
    """A slapd on loopback with its own config, data, CA and seed directory."""

    base_dn = BASE_DN
    admin_dn = f"cn=admin,{BASE_DN}"
    bind_dn = f"cn=portal,ou=services,{BASE_DN}"
    people_dn = f"ou=people,{BASE_DN}"
    groups_dn = f"ou=groups,{BASE_DN}"
    people = PEOPLE

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="portal-slapd-",
                                                                  dir="/var/tmp"))
        self._own_root = root is None
        self.config_dir = self.root / "slapd.d"
        self.data_dir = self.root / "data"
        self.tls_dir = self.root / "tls"
        self.log_file = self.root / "slapd.log"
        self.ca_cert = self.tls_dir / "ca.pem"
        self.other_ca_cert = self.tls_dir / "other-ca.pem"
        self.server_cert = self.tls_dir / "server.pem"
        self.server_key = self.tls_dir / "server.key"
        self.admin_password = secrets.token_urlsafe(16)
        self.bind_password = secrets.token_urlsafe(16)
        self.port = free_port()
        self.ldaps_port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._dirty = False

    # ---- addresses and names ----

    @property
    def uri(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_uri(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    def user_dn(self, uid: str) -> str:
        return f"uid={uid},{self.people_dn}"

    def group_dn(self, group_cn: str) -> str:
        return f"cn={group_cn},{self.groups_dn}"

    def password_of(self, uid: str) -> str:
        return PEOPLE[uid].password

    def settings(self, **overrides: str) -> dict[str, str]:
        """Return the LDAP_* environment the portal reads to use this server."""
        env = {
            "LDAP_SERVER_URI": self.uri,
            "LDAP_BIND_DN": self.bind_dn,
            "LDAP_BIND_PASSWORD": self.bind_password,
            "LDAP_USER_SEARCH_BASE": self.people_dn,
            "LDAP_USER_FILTER": "(uid=%(user)s)",
            "LDAP_GROUP_SEARCH_BASE": self.groups_dn,
            "LDAP_GROUP_TYPE": "groupOfNames",
            "LDAP_ROLE_GROUP_ADMIN": self.group_dn("portal-admins"),
            "LDAP_ROLE_GROUP_ORG_ADMIN": self.group_dn("portal-orgadmins"),
            "LDAP_ROLE_GROUP_FACULTY": self.group_dn("portal-faculty"),
            "LDAP_ORG_ATTRIBUTE": "ou",
            "LDAP_START_TLS": "false",
            "LDAP_CA_CERT_FILE": str(self.ca_cert),
            "LDAP_TIMEOUT": "5",
        }
        env.update(overrides)
        return env

    # ---- life cycle ----

    def open(self) -> SlapdServer:
        """Build certificates, config and seed data, then start slapd."""
        for path in (self.config_dir, self.data_dir, self.tls_dir):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._make_certificates()
        (self.root / "config.ldif").write_text(self._config_ldif())
        _run([SLAPADD, "-n0", "-F", str(self.config_dir), "-l", str(self.root / "config.ldif")])
        self._load_seed()
        self.start()
        return self

    def close(self) -> None:
        """Stop slapd and delete every file the server made."""
        try:
            self.stop()
        finally:
            if self._own_root:
                shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SlapdServer:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start slapd on the same ports with the same data; return once a bind works."""
        if self.is_running:
            return
        urls = f"ldap://127.0.0.1:{self.port}/ ldaps://127.0.0.1:{self.ldaps_port}/"
        with open(self.log_file, "ab") as log:
            self._process = subprocess.Popen(
                [SLAPD, "-h", urls, "-F", str(self.config_dir), "-d", "0"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"slapd exited {self._process.returncode} at start:\n{self.log()}"
                )
            try:
                self._connection().unbind_s()
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"slapd did not answer a bind: {exc}\n{self.log()}") \
                        from exc
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop slapd cleanly (SIGTERM, then SIGKILL) and wait for it to exit."""
        process, self._process = self._process, None
        if process is None:
            return
        self._dirty = True
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)  # in case a test paused it
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)

    def pause(self) -> None:
        """Freeze slapd (SIGSTOP): connections are accepted by the kernel, never answered."""
        assert self._process is not None and self.is_running, "slapd is not running"
        self._dirty = True
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused slapd run again."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)

    def reset(self) -> None:
        """Bring back the seed data and a running slapd if anything changed since the last."""
        if not self._dirty and self.is_running:
            return
        self.stop()
        self._load_seed()
        self.start()
        self._dirty = False

    def log(self) -> str:
        """Return the tail of slapd's output."""
        try:
            return self.log_file.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    # ---- changes to the directory ----

    def add_to_group(self, uid: str, group_cn: str) -> None:
        import ldap

        self._modify(self.group_dn(group_cn), [(ldap.MOD_ADD, "member", self.user_dn(uid))])

    def remove_from_group(self, uid: str, group_cn: str) -> None:
        """Remove a member (groupOfNames must keep at least one: fred, olga, adam stay)."""
        import ldap

        self._modify(self.group_dn(group_cn), [(ldap.MOD_DELETE, "member", self.user_dn(uid))])

    def set_attribute(self, uid: str, attr: str, value: str | list[str] | None) -> None:
        """Replace a user's attribute; None deletes it."""
        import ldap

        if value is None:
            self._modify(self.user_dn(uid), [(ldap.MOD_DELETE, attr, None)])
            return
        values = [value] if isinstance(value, str) else value
        self._modify(self.user_dn(uid), [(ldap.MOD_REPLACE, attr, [v.encode() for v in values])])

    def set_password(self, uid: str, password: str) -> None:
        self.set_attribute(uid, "userPassword", ssha(password))

    def disable_user(self, uid: str) -> None:
        """Lock the account with ppolicy: its binds fail with invalidCredentials."""
        self.set_attribute(uid, "pwdAccountLockedTime", PERMANENTLY_LOCKED)

    def enable_user(self, uid: str) -> None:
        self.set_attribute(uid, "pwdAccountLockedTime", None)

    def delete_user(self, uid: str) -> None:
        """Delete the person and their group memberships."""
        import ldap

        conn = self._connection()
        self._dirty = True
        try:
            for group_cn in GROUPS:
                with contextlib.suppress(ldap.NO_SUCH_ATTRIBUTE):
                    conn.modify_s(
                        self.group_dn(group_cn),
                        [(ldap.MOD_DELETE, "member", self.user_dn(uid).encode())],
                    )
            conn.delete_s(self.user_dn(uid))
        finally:
            conn.unbind_s()

    def search(self, base: str, filterstr: str = "(objectClass=*)") -> list[tuple[str, dict]]:
        """Search as the rootdn (for assertions about the directory itself)."""
        import ldap

        conn = self._connection()
        try:
            return conn.search_s(base, ldap.SCOPE_SUBTREE, filterstr)
        finally:
            conn.unbind_s()

    def bind_as(self, dn: str, password: str, start_tls: bool = False) -> None:
        """Bind as someone; raise python-ldap's error when the directory refuses."""
        conn = self._connection(dn, password, start_tls=start_tls)
        conn.unbind_s()

    # ---- internals ----

    def _connection(self, dn: str | None = None, password: str | None = None,
                    start_tls: bool = False):
        import ldap

        conn = ldap.initialize(self.uri)
        conn.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
        conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 5)
        conn.set_option(ldap.OPT_TIMEOUT, 5)
        conn.set_option(ldap.OPT_REFERRALS, 0)
        if start_tls:
            conn.set_option(ldap.OPT_X_TLS_CACERTFILE, str(self.ca_cert))
            conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
            conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
            conn.start_tls_s()
        conn.simple_bind_s(dn or self.admin_dn, self.admin_password if dn is None else password)
        return conn

    def _modify(self, dn: str, changes: list[tuple[int, str, list[bytes] | bytes | str | None]]
                ) -> None:
        conn = self._connection()
        self._dirty = True
        try:
            encoded = [
                (op, attr, value.encode() if isinstance(value, str) else value)
                for op, attr, value in changes
            ]
            conn.modify_s(dn, encoded)
        finally:
            conn.unbind_s()

    def _load_seed(self) -> None:
        """Replace the mdb database with the seed LDIF (slapd must not be running)."""
        assert not self.is_running, "stop slapd before loading the seed"
        for name in ("data.mdb", "lock.mdb"):
            (self.data_dir / name).unlink(missing_ok=True)
        seed = self.root / "seed.ldif"
        seed.write_text(self._seed_ldif())
        _run([SLAPADD, "-F", str(self.config_dir), "-b", BASE_DN, "-l", str(seed)])
        self._dirty = False


@pytest.fixture(scope="session")
def slapd() -> Iterator[SlapdServer]:
    """Yield a running throw-away slapd for the whole session; remove it afterwards."""
    server = SlapdServer()
    try:
        server.open()
        yield server
    finally:
        server.close()
