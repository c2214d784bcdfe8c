"""The console proxy: browser websockets in, VNC and serial consoles out (asyncio).

Each websocket carries one single-use token. The proxy checks the page's Origin (403 for
another site), redeems the token, then either speaks RFB to the VM's VNC server with the VM's
password and offers the browser security type None, or opens the domain's serial console
through libvirt's stream. It relays bytes both ways until either side leaves, the user is idle
for too long, or the session reaches its longest allowed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs, urlsplit

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from hosts.virt import SerialConsole, VirtError

from . import services
from .conf import origin_allowed
from .models import ConsoleKind
from .rfb import (
    HANDSHAKE_TIMEOUT,
    ClientMessages,
    Inbox,
    RFBError,
    authenticate_upstream,
    greet_browser,
)

log = logging.getLogger(__name__)

CLOSE_REFUSED = 4001
CLOSE_IDLE = 4002
CLOSE_TOO_LONG = 4003
CLOSE_UNREACHABLE = 4004
CLOSE_ENDED = 4005
CONNECT_TIMEOUT = 10.0
READ_SIZE = 65536


def _db(func: Callable[..., object]) -> Callable[..., Awaitable[object]]:
    """Run a service in Django's thread for sync code, with fresh database connections."""
    def call(**kwargs: object) -> object:
        close_old_connections()
        try:
            return func(**kwargs)
        finally:
            close_old_connections()

    return sync_to_async(call, thread_sensitive=True)


def _kind_of(path: str) -> str:
    # The last path segment names the console, so a TLS front end may mount us under a prefix.
    return urlsplit(path).path.rstrip("/").rpartition("/")[2]


def _session_key(request: Request) -> str | None:
    cookies = SimpleCookie()
    try:
        for header in request.headers.get_all("Cookie"):
            cookies.load(header)
    except CookieError:
        return None
    morsel = cookies.get(settings.SESSION_COOKIE_NAME)
    return morsel.value if morsel else None


def _reason(text: str) -> str:
    """Cut a close reason to the 123 bytes a websocket close frame carries."""
    data = text.encode()[:123]
    return data.decode("utf-8", "ignore")


@dataclass
class Limits:
    """How long a console may stay idle and open at most, in seconds."""

    idle: float
    longest: float


class ConsoleProxy:
    """Serve console websockets; redeem and close_session default to the console services."""

    def __init__(
        self,
        limits: Limits,
        *,
        redeem: Callable[..., Awaitable[services.ConsoleTarget]] | None = None,
        close_session: Callable[..., Awaitable[object]] | None = None,
    ) -> None:
        """Keep the limits and the (async) token services to use."""
        self.limits = limits
        self.redeem = redeem or _db(services.console_token_redeem)
        self.close_session = close_session or _db(services.console_session_close)

    @staticmethod
    def _select_subprotocol(_conn: ServerConnection, offered: list[str]) -> str | None:
        # noVNC asks for "binary" and refuses a handshake that does not name it; xterm asks none.
        return "binary" if "binary" in offered else None

    @staticmethod
    def _check_request(conn: ServerConnection, request: Request) -> Response | None:
        """Refuse, before the upgrade, a page of another site or an unknown console."""
        origin = request.headers.get("Origin")
        if not origin_allowed(origin):
            log.warning("console: refused a websocket from origin %r", origin)
            return conn.respond(HTTPStatus.FORBIDDEN, "This origin may not open consoles.\n")
        if _kind_of(request.path) not in ConsoleKind.values:
            return conn.respond(HTTPStatus.NOT_FOUND, "No such console.\n")
        return None

    def serve(self, host: str, port: int) -> Awaitable[Server]:
        """Return the websocket server on host:port (await it, or use it as a context manager)."""
        return serve(self.handle, host, port, process_request=self._check_request,
                     select_subprotocol=self._select_subprotocol, max_size=2**20,
                     compression=None, server_header=None)

    async def handle(self, ws: ServerConnection) -> None:
        """Redeem the connection's token and relay its console until one side leaves."""
        kind = _kind_of(ws.request.path)
        token = parse_qs(urlsplit(ws.request.path).query).get("token", [""])[0]
        try:
            target = await self.redeem(token=token, kind=kind,
                                       origin=ws.request.headers.get("Origin"),
                                       session_key=_session_key(ws.request))
        except services.ConsoleRefused as exc:
            log.info("console: refused a %s token: %s", kind, exc)
            await ws.close(CLOSE_REFUSED, _reason(str(exc)))
            return
        started = time.monotonic()
        log.info("console: user %s opened the %s console of %s", target.user_id, kind,
                 target.vm_name)
        try:
            if kind == ConsoleKind.VNC:
                await self._relay_vnc(ws, target)
            else:
                await self._relay_serial(ws, target)
        finally:
            with contextlib.suppress(Exception):
                await self.close_session(token_id=target.token_id)
            log.info("console: user %s closed the %s console of %s after %.0f s",
                     target.user_id, kind, target.vm_name, time.monotonic() - started)

    async def _watch(self, ws: ServerConnection, last_input: list[float],
                     tasks: list[asyncio.Task]) -> None:
        """Close the websocket once the user is idle too long or the session too old."""
        started = time.monotonic()
        step = max(0.2, min(5.0, self.limits.idle / 4))
        while True:
            await asyncio.sleep(step)
            now = time.monotonic()
            if now - last_input[0] >= self.limits.idle:
                code, text = CLOSE_IDLE, "The console was idle too long and has been closed."
            elif now - started >= self.limits.longest:
                code, text = CLOSE_TOO_LONG, "The console reached its longest allowed time."
            else:
                continue
            await ws.close(code, _reason(text))
            for task in tasks:
                task.cancel()
            return

    async def _run(self, ws: ServerConnection, pumps: list[Awaitable[None]],
                   last_input: list[float]) -> None:
        """Run the pumps until the first ends, with the watchdog; cancel the rest."""
        tasks = [asyncio.ensure_future(p) for p in pumps]
        watchdog = asyncio.ensure_future(self._watch(ws, last_input, tasks))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watchdog.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, watchdog, return_exceptions=True)

    # -- VNC -----------------------------------------------------------------------------------

    async def _relay_vnc(self, ws: ServerConnection, target: services.ConsoleTarget) -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(target.vnc_address, target.vnc_port), CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            log.warning("console: cannot reach VNC of %s at %s:%s: %s", target.vm_name,
                        target.vnc_address, target.vnc_port, exc)
            await ws.close(CLOSE_UNREACHABLE, _reason(
                f"The display of {target.vm_name} does not answer; is it running?"))
            return
        try:
            try:
                await asyncio.wait_for(
                    authenticate_upstream(reader, writer, target.vnc_password),
                    HANDSHAKE_TIMEOUT)
            except (RFBError, OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                log.warning("console: VNC handshake with %s failed: %s", target.vm_name, exc)
                await ws.close(CLOSE_UNREACHABLE, _reason(
                    f"The display of {target.vm_name} could not be opened."))
                return
            inbox = Inbox(self._browser_bytes(ws))
            try:
                await asyncio.wait_for(greet_browser(inbox, ws.send), HANDSHAKE_TIMEOUT)
            except (RFBError, TimeoutError, ConnectionClosed) as exc:
                log.info("console: browser handshake for %s failed: %s", target.vm_name, exc)
                await ws.close(CLOSE_ENDED, "The browser did not complete the handshake.")
                return
            try:
                # ClientInit (one byte, "shared") ends the handshake; messages follow it.
                client_init = await asyncio.wait_for(inbox.readexactly(1), HANDSHAKE_TIMEOUT)
            except (TimeoutError, ConnectionClosed):
                return
            messages = ClientMessages()
            last_input = [time.monotonic()]
            early = inbox.leftover()
            messages.feed(early)
            writer.write(client_init + early)

            async def browser_to_vm() -> None:
                async for message in ws:
                    data = message.encode() if isinstance(message, str) else message
                    if messages.feed(data):
                        last_input[0] = time.monotonic()
                    writer.write(data)
                    await writer.drain()

            async def vm_to_browser() -> None:
                while data := await reader.read(READ_SIZE):
                    await ws.send(data)
                await ws.close(CLOSE_ENDED, "The display closed.")

            await self._run(ws, [browser_to_vm(), vm_to_browser()], last_input)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    def _browser_bytes(ws: ServerConnection) -> Callable[[], Awaitable[bytes]]:
        async def receive() -> bytes:
            message = await ws.recv()
            return message.encode() if isinstance(message, str) else message

        return receive

    # -- serial --------------------------------------------------------------------------------

    async def _relay_serial(self, ws: ServerConnection, target: services.ConsoleTarget) -> None:
        try:
            console = await asyncio.to_thread(SerialConsole, target.host_uri, target.domain)
        except VirtError as exc:
            log.warning("console: %s", exc)
            await ws.close(CLOSE_UNREACHABLE, _reason(
                f"The serial console of {target.vm_name} could not be opened."))
            return
        loop = asyncio.get_running_loop()
        incoming: asyncio.Queue[bytes] = asyncio.Queue()

        def read_guest() -> None:
            # libvirt's blocking read lives in its own thread; close() ends it.
            while data := console.read():
                loop.call_soon_threadsafe(incoming.put_nowait, data)
            loop.call_soon_threadsafe(incoming.put_nowait, b"")

        threading.Thread(target=read_guest, name=f"serial-{target.domain}", daemon=True).start()
        last_input = [time.monotonic()]

        async def guest_to_browser() -> None:
            while data := await incoming.get():
                await ws.send(data)
            await ws.close(CLOSE_ENDED, "The serial console ended.")

        async def browser_to_guest() -> None:
            async for message in ws:
                last_input[0] = time.monotonic()
                data = message.encode() if isinstance(message, str) else message
                await asyncio.to_thread(console.write, data)

        try:
            await self._run(ws, [guest_to_browser(), browser_to_guest()], last_input)
        finally:
            console.close()


async def run_proxy(host: str, port: int, limits: Limits, stop: asyncio.Event) -> None:
    """Serve consoles on host:port until stop is set."""
    proxy = ConsoleProxy(limits)
    async with proxy.serve(host, port) as server:
        sockets = ", ".join(str(s.getsockname()[:2]) for s in server.sockets)
        log.info("console proxy listening on %s", sockets)
        await stop.wait()
