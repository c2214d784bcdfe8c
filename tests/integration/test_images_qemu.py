"""Template images the portal must refuse (OSSA-2024-001), and installs that run at once.

Each bad image is made by the real qemu-img and installed through the real libvirtd: the
install fails with a message that names the reason, nothing is created, and no file outside
the datastore is handed to qemu's user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import OperationalError, connection

from hosts.virt import Hypervisor, close_all
from networking.models import PrivateIP
from operations.models import Operation, OperationStatus
from operations.runner import operation_run
from tests.integration.qemu import URI, unique, virsh
from tests.integration.test_portal_qemu import install, real_site  # noqa: F401 - fixture
from vms.models import VirtualMachine, VMState
from vms.services.workflow import vm_request_approve, vm_request_create

pytestmark = [pytest.mark.hypervisor, pytest.mark.django_db]
EVIL = "evil.qcow2"


def qemu_img(*args: str) -> None:
    done = subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, f"qemu-img {' '.join(args)}: {done.stderr}"


@pytest.fixture
def outside() -> Iterator[Path]:
    """Return a folder outside the datastore, as a host's other files are."""
    path = Path(tempfile.mkdtemp(prefix="portaltest-outside-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def with_data_file(store: Path, out: Path) -> list[Path]:
    secret = out / "secret.raw"
    qemu_img("create", "-f", "qcow2", "-o", f"data_file={secret},data_file_raw=on",
             str(store / EVIL), "64M")
    with secret.open("r+b") as f:
        f.write(b"a host file the guest must never read")
    return [secret]


def with_unexpected_backing(store: Path, out: Path) -> list[Path]:
    other = out / "other.qcow2"
    qemu_img("create", "-f", "qcow2", str(other), "64M")
    qemu_img("create", "-f", "qcow2", "-b", str(other), "-F", "qcow2", str(store / EVIL))
    return [other]


def luks_encrypted(store: Path, out: Path) -> list[Path]:
    # qemu-img times its key stretching on the thread's CPU clock first; on a loaded machine
    # whose clock ticks coarsely that first sample can read zero and qemu-img gives up
    # ("Unable to get accurate CPU usage"). The image itself is what the test needs, so a
    # failed timing is tried again; any other error ends the test at once.
    args = ["qemu-img", "create", "--object", "secret,id=sec0,data=portal-test", "-f", "qcow2",
            "-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=250",
            str(store / EVIL), "64M"]
    for _ in range(5):
        done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode == 0:
            return []
        assert "accurate CPU usage" in done.stderr, done.stderr
        (store / EVIL).unlink(missing_ok=True)
    raise AssertionError(f"qemu-img could not time its key stretching: {done.stderr}")


def raw_recorded_as_qcow2(store: Path, out: Path) -> list[Path]:
    qemu_img("create", "-f", "raw", str(store / EVIL), "64M")
    return []


def symlink_to_outside(store: Path, out: Path) -> list[Path]:
    target = out / "disk.qcow2"
    qemu_img("create", "-f", "qcow2", str(target), "64M")
    target.chmod(0o644)
    (store / EVIL).symlink_to(target)
    return [target]


@pytest.mark.parametrize(("make", "reason"), [
    (with_data_file, "refers to a data file outside the image"),
    (with_unexpected_backing, "has a backing file"),
    (luks_encrypted, "is encrypted"),
    (raw_recorded_as_qcow2, "is not a qcow2 image"),
    (symlink_to_outside, "outside its datastore"),
])
def test_a_dangerous_template_image_is_refused_at_install_and_nothing_is_made(
        real_site, outside, django_capture_on_commit_callbacks,  # noqa: F811
        make: Callable[[Path, Path], list[Path]], reason: str):
    site = real_site
    store = Path(site.datastore.path)
    watched = make(store, outside)
    before = {p: (p.stat().st_uid, p.stat().st_gid, p.read_bytes()) for p in watched}
    files_before = sorted(os.listdir(store))
    site.template.image = EVIL
    site.template.full_clean()
    site.template.save()

    name = f"pt-{unique('img')[-6:]}"
    vm, op = install(site, django_capture_on_commit_callbacks, name)

    assert op.status == OperationStatus.FAILED
    assert op.message.startswith(f"The template image {EVIL} of “{site.template.name}” is "
                                 "refused: "), op.message
    assert reason in op.message, op.message
    assert vm.state == VMState.FAILED and vm.host is None
    assert virsh("dominfo", name, check=False).returncode != 0
    assert sorted(os.listdir(store)) == files_before  # no disk, no seed
    assert not PrivateIP.objects.filter(vm=vm).exists()
    for path, (uid, gid, data) in before.items():
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (uid, gid) == (0, 0), path
        assert path.read_bytes() == data


def test_a_clean_template_still_installs_after_the_inspection(
        real_site, django_capture_on_commit_callbacks):  # noqa: F811
    vm, op = install(real_site, django_capture_on_commit_callbacks, f"pt-{unique()[-6:]}")
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.detail)
    assert vm.state == VMState.RUNNING


# --- concurrent installs ----------------------------------------------------------------------


def test_four_threads_make_disks_in_one_pool_at_once_without_refresh_errors():
    store = Path(tempfile.mkdtemp(prefix="portaltest-", dir="/var/tmp"))
    store.chmod(0o755)
    base = store / "base.qcow2"
    qemu_img("create", "-f", "qcow2", str(base), "64M")
    pool = unique()
    errors: list[str] = []
    close_all()

    def work(worker: int) -> None:
        hv = Hypervisor(URI)
        for n in range(6):
            volume = f"vm-{worker}-{n}.qcow2"
            try:
                hv.ensure_pool(pool, str(store))
                hv.create_overlay(pool, volume, str(base), 1024**3)
                assert hv.volume_exists(pool, volume)
                hv.list_volumes(pool)
            except Exception as exc:  # noqa: BLE001 - every failure is the finding
                errors.append(f"{volume}: {exc}")

    try:
        threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(list(store.glob("vm-*.qcow2"))) == 24
    finally:
        virsh("pool-destroy", pool, check=False)
        virsh("pool-undefine", pool, check=False)
        shutil.rmtree(store, ignore_errors=True)
        close_all()


def _wait_for_sqlite_locks(execute, sql, params, many, context):  # noqa: ANN001, ANN202
    """Retry a statement the shared in-memory test database refused as locked.

    The test database is SQLite's shared cache, which answers a second writer with
    "database table is locked" at once instead of waiting as the portal's file database
    does (timeout 20 s). With read_uncommitted, readers take no table locks, so a waiting
    writer holds nothing the first needs and this cannot deadlock.
    """
    for _ in range(2000):
        try:
            return execute(sql, params, many, context)
        except OperationalError as exc:
            if "locked" not in str(exc):
                raise
            time.sleep(0.01)
    return execute(sql, params, many, context)


@pytest.mark.django_db(transaction=True)
def test_four_installs_approved_at_once_all_succeed(
        real_site, django_capture_on_commit_callbacks, monkeypatch):  # noqa: F811
    site = real_site
    site.host.cpu_overcommit = 8  # room for four VMs on a small machine
    site.host.save(update_fields=["cpu_overcommit"])
    approver = site.another_admin()
    # Approvals commit at once here: keep their tasks queued, run them below all together.
    monkeypatch.setattr("django_q.tasks.async_task", lambda *args, **kwargs: None)
    ops = []
    for n in range(4):
        req = vm_request_create(requester=site.admin, name=f"pt-{unique()[-6:]}-{n}",
                                template=site.template, vcpus=1, memory_mib=64, disk_gib=1,
                                purpose="concurrent installs", security_domain=site.domain)
        vm_request_approve(request=req, actor=approver)
        ops.append(VirtualMachine.objects.get(request=req).operations.get().pk)
    # A fresh pool: the installs define and start it together too.
    virsh("pool-destroy", site.datastore.pool_name, check=False)
    virsh("pool-undefine", site.datastore.pool_name, check=False)
    close_all()
    start = threading.Barrier(len(ops))
    crashed: list[BaseException] = []

    def run(op_id: int) -> None:
        try:
            with connection.execute_wrapper(_wait_for_sqlite_locks):
                connection.cursor().execute("PRAGMA read_uncommitted = 1")
                start.wait()
                operation_run(operation_id=op_id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            crashed.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(op_id,)) for op_id in ops]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert crashed == []
    outcomes = {op.vm.name: (op.status, op.detail or op.message)
                for op in Operation.objects.filter(pk__in=ops).select_related("vm")}
    assert all(status == OperationStatus.SUCCEEDED for status, _ in outcomes.values()), outcomes
    assert set(VirtualMachine.objects.filter(operations__pk__in=ops)
               .values_list("state", flat=True)) == {VMState.RUNNING}
    assert len(list(Path(site.datastore.path).glob("vm-*.qcow2"))) == 4
