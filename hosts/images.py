"""Template images checked on the host that is about to use them (OSSA-2024-001)."""

from __future__ import annotations

from pathlib import PurePosixPath
from urllib.parse import urlsplit

from django.conf import settings

from core.errors import PortalError

from .models import Datastore, Host, Template
from .remote import RemoteError, RemoteHost, run
from .virt import Hypervisor, NotFound, VirtError, is_remote
from .virt.images import ImageMissing, ImageRefused, Runner, image_check, run_local


def host_runner(host: Host) -> Runner | None:
    """Return how to run a command on the host's machine, or None when there is no way.

    A local qemu URI is this machine; a remote host is reached by the SSH runner at its
    address. libvirt's test driver has no files to inspect.
    """
    scheme = urlsplit(host.uri).scheme
    if scheme.startswith("qemu") and not is_remote(host.uri):
        return run_local
    if is_remote(host.uri) and host.address:
        remote = RemoteHost(address=host.address, host_key=host.ssh_host_key,
                            key_filename=settings.PORTAL_MONITOR["SSH_KEY_FILE"] or None)

        def run_remote(argv: list[str]) -> tuple[int, str, str]:
            try:
                result = run(remote, argv, check=False)
            except (RemoteError, ValueError) as exc:
                raise VirtError(f"cannot inspect images on {host.name}: {exc}") from exc
            return result.exit_status, result.stdout, result.stderr

        return run_remote
    return None


def _refused(template: Template, reason: str) -> PortalError:
    return PortalError(
        f"The template image {template.image} of “{template.name}” is refused: {reason}. "
        "Nothing was created; an administrator must replace the image."
    )


def _missing(template: Template, host: Host) -> PortalError:
    return PortalError(
        f"Template {template.name}: image {template.image} is not in datastore "
        f"{template.datastore.name} on {host.name}; nothing was created."
    )


def _no_shell(host: Host, image: str) -> PortalError:
    return PortalError(
        f"Host {host.name} has no SSH address, so the portal cannot inspect the image "
        f"{image} there before using it; set the host's SSH address."
    )


def template_image_check(*, template: Template, host: Host, hv: Hypervisor | None = None) -> str:
    """Return the template image's path on the host, or raise PortalError if it is refused.

    With a shell on the host (this machine, or SSH) the image is inspected by qemu-img with
    its recorded format (qcow2), and its real path must lie inside the datastore. Otherwise
    only libvirt's volume XML is read, which shows no data file: a remote host needs its SSH
    address for templates to be used there.
    """
    ds = template.datastore
    path = template.image_path
    runner = host_runner(host)
    if runner is not None:
        try:
            image_check(path, datastore=ds.path, run=runner)
        except ImageMissing as exc:
            raise _missing(template, host) from exc
        except ImageRefused as exc:
            raise _refused(template, str(exc)) from exc
        return path
    if is_remote(host.uri):
        raise _no_shell(host, template.image)
    # libvirt's test driver: no files, only its volumes.
    hv = hv or Hypervisor(host.uri)
    try:
        image = hv.inspect_image(ds.pool_name, template.image)
    except NotFound as exc:
        raise _missing(template, host) from exc
    if image.format != "qcow2":
        raise _refused(template, f"{template.image} is {image.format}, not qcow2")
    if image.backing_path:
        raise _refused(template, f"{template.image} has a backing file ({image.backing_path}); "
                                 "a template must be a standalone image")
    return path


def disk_image_check(*, datastore: Datastore, volume: str, host: Host, owner: str) -> None:
    """Refuse to copy a VM's disk that names files outside its datastore (clone, save).

    The disk must be a qcow2 with no data file and no encryption whose backing file, if any,
    is a clean standalone qcow2 inside the same datastore. owner names the VM in messages.
    """
    runner = host_runner(host)
    if runner is None:
        if is_remote(host.uri):
            raise _no_shell(host, volume)
        return  # libvirt's test driver: no files to read
    path = str(PurePosixPath(datastore.path) / volume)
    try:
        image_check(path, datastore=datastore.path, run=runner, any_backing_inside=True)
    except ImageMissing as exc:
        raise PortalError(f"The disk of {owner} is not in datastore {datastore.name} on "
                          f"{host.name}; nothing was copied.") from exc
    except ImageRefused as exc:
        raise PortalError(f"The disk of {owner} is refused: {exc}. Nothing was copied; an "
                          "administrator has to look at it.") from exc
