"""Browser tier: a student gets into a new VM by the console, the serial console and SSH.

The portal runs as `make demo` runs it (see tests/browser/walkthrough_portal.py).
"""

from __future__ import annotations

import time

import pytest

from tests.browser.walkthrough_portal import virsh
from tests.browser.walkthrough_user import (
    INSTALL_TIMEOUT_MS,
    User,
    decide,
    expect_submitted,
    request_vm,
    wait_for_operation,
)

pytestmark = pytest.mark.browser


def new_ssh_key():  # noqa: ANN201
    """Return (paramiko private key, OpenSSH public line) of a fresh ed25519 key."""
    from io import StringIO

    import paramiko
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
    return paramiko.Ed25519Key.from_private_key(StringIO(pem)), f"{public} student@laptop"


def wait_for_text(page, locator, text: str, timeout_s: float, poke: bool = False) -> str:  # noqa: ANN001
    """Wait until the locator's text holds text, pressing Enter now and then if poke."""
    deadline = time.monotonic() + timeout_s
    seen = ""
    while time.monotonic() < deadline:
        seen = locator.inner_text()
        if text in seen:
            return seen
        if poke:
            page.keyboard.press("Enter")
        page.wait_for_timeout(1000)
    pytest.fail(f"{text!r} never appeared; the screen shows:\n{seen[-1500:]}")


def wait_lit(page, done, timeout_s: float) -> int:  # noqa: ANN001
    """Count the console canvas's lit pixels until done(count) holds; return the last count."""
    from tests.browser.test_console import COUNT_LIT

    deadline = time.monotonic() + timeout_s
    lit = page.evaluate(COUNT_LIT)
    while not done(lit) and time.monotonic() < deadline:
        page.wait_for_timeout(500)
        lit = page.evaluate(COUNT_LIT)
    return lit


def test_a_student_gets_into_a_new_vm_by_console_serial_console_and_ssh(browser, portal) -> None:
    """Key in the profile -> request -> admin's approval -> Console, serial login, SSH."""
    from playwright.sync_api import expect

    from tests.browser.test_console import REUSE
    from tests.integration.guest import ssh_connect, ssh_run

    name = portal.new_vm_name()
    key, public_line = new_ssh_key()
    student = User(browser, portal, "student")
    student.login()
    page = student.page
    student.goto("/people/keys/")
    page.fill("#id_name", "laptop")
    page.fill("#id_public_key", public_line)
    page.locator("#ssh-key-form").get_by_role("button", name="Add key").click()
    expect(page.locator("#ssh-keys tbody")).to_contain_text("laptop")
    student.shot("ssh-keys")
    student.nav("Request a VM")
    expect(page.get_by_label("laptop", exact=False)).to_be_checked()  # the newest key
    page.get_by_label("Generate a password", exact=False).check()
    request_vm(student, name, "Networks lab: log in by console and SSH.")
    expect_submitted(student, f"Request {name} submitted")
    student.logout()

    admin = User(browser, portal, "admin")  # an admin's approval is the last word at any stage
    admin.login()
    decide(admin, name, "Approve", "Approved for the networks lab.")
    admin.logout()

    student = User(browser, portal, "student")
    student.login()
    page = student.page
    student.nav("My VMs")
    page.locator("main table tbody tr", has_text=name).get_by_role("link", name=name).click()
    wait_for_operation(student, "install")
    # The login panel follows the install by itself: no reload.
    expect(page.locator("#password-reveal")).to_be_visible(timeout=10_000)
    ip = page.locator("#vm-ip").inner_text()
    login_user = page.locator("#vm-login-user").inner_text().strip()
    expect(page.locator("#vm-ssh-line")).to_have_text(f"ssh {login_user}@{ip}")
    expect(page.locator("#vm-login-keys")).to_contain_text("laptop")
    page.locator("#password-reveal").get_by_role("button").click()
    password = page.locator("#vm-password").inner_text().strip()
    assert len(password) >= 16, password
    student.shot("vm-password-once")
    page.reload()
    expect(page.locator("#vm-password")).to_have_count(0)  # shown once, then only the hash
    expect(page.locator("#vm-login-password")).to_contain_text("already shown")

    vm_page = page.url
    page.locator("#vm-console a", has_text="Serial console").first.click()
    expect(page.locator("#console-status")).to_have_attribute("data-state", "connected")
    page.locator("#console-screen .xterm").click()
    rows = page.locator("#console-screen .xterm-rows")
    wait_for_text(page, rows, "login:", INSTALL_TIMEOUT_MS / 1000, poke=True)
    page.keyboard.type(login_user)
    page.keyboard.press("Enter")
    wait_for_text(page, rows, "assword:", 30)
    page.keyboard.type(password)
    page.keyboard.press("Enter")
    page.keyboard.type("echo logged-in-as-$(id -un)")
    page.keyboard.press("Enter")
    wait_for_text(page, rows, f"logged-in-as-{login_user}", 30)
    student.shot("serial-logged-in")

    # The graphical console: by now tty1 shows the login prompt below the boot messages.
    page.goto(vm_page)
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.locator("#vm-console a", has_text="Console").first.click()
    expect(page.locator("#console-status")).to_have_attribute("data-state", "connected")
    lit = wait_lit(page, lambda n: n >= 3000, 30)
    assert lit >= 3000, f"the console's canvas stayed (nearly) blank: {lit} lit pixels"
    student.shot("console")
    # Log in there too and clear the screen: only the shell's prompt is left lit.
    page.locator("#console-screen canvas").click()
    for text, pause in ((login_user, 2000), (password, 3000), ("clear", 1000)):
        page.keyboard.type(text, delay=30)
        page.keyboard.press("Enter")
        page.wait_for_timeout(pause)
    cleared = wait_lit(page, lambda n: 0 < n < 1500, 30)
    assert 0 < cleared < 1500, f"no shell cleared the screen: {cleared} lit pixels (was {lit})"
    student.shot("console-logged-in")
    assert len(sockets) == 1 and "token=" in sockets[0], sockets
    again = page.evaluate(REUSE, sockets[0])
    assert again["code"] != 1000 and "used already" in again["reason"], again

    client = ssh_connect(ip, login_user, key=key)  # from this host, on the VM's network
    try:
        assert ssh_run(client, "hostname").strip() == name
    finally:
        client.close()

    page.goto(f"{portal.url}/vms/")
    page.locator("main table tbody tr", has_text=name).get_by_role("link", name=name).click()
    with page.expect_navigation():
        page.locator('#vm-actions button[data-action="delete"]').click()
    wait_for_operation(student, "delete")
    assert virsh("dominfo", name).returncode != 0
    assert not list(portal.datastore.glob("vm-*")), "the VM's disk or seed is still there"
    student.logout()
