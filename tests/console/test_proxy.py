"""The console proxy against a small fake VNC server: Origin, RFB authentication, relaying."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from console.proxy import CLOSE_IDLE, CLOSE_REFUSED, CLOSE_UNREACHABLE, ConsoleProxy, Limits
from console.rfb import ClientMessages, RFBError, authenticate_upstream, vnc_auth_response
from console.services import ConsoleRefused, ConsoleTarget

PASSWORD = "s3cr3t!"
CHALLENGE = bytes((i * 17 + 5) & 0xFF for i in range(16))
# The answer noVNC's own DES (core/crypto/des.js) gives for PASSWORD and CHALLENGE.
EXPECTED = bytes.fromhex("9048ee3b9614f6e9533f948802df9b37")
SERVER_INIT = struct.pack(">HH16sI", 640, 480, bytes(16), 4) + b"fake"
ORIGIN = "http://127.0.0.1:8000"


class FakeVNC:
    """An RFB 3.8 server that asks for VNC Authentication and checks the DES answer."""

    def __init__(self, password_ok: bool = True) -> None:
        self.answers: list[bytes] = []
        self.received = bytearray()
        self.client_init = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"RFB 003.008\n")
        assert await reader.readexactly(12) == b"RFB 003.008\n"
        writer.write(bytes([1, 2]))  # one security type: VNC Authentication
        assert await reader.readexactly(1) == b"\x02"
        writer.write(CHALLENGE)
        answer = await reader.readexactly(16)
        self.answers.append(answer)
        if answer != EXPECTED:
            reason = b"Authentication failed"
            writer.write(struct.pack(">II", 1, len(reason)) + reason)
            await writer.drain()
            writer.close()
            return
        writer.write(struct.pack(">I", 0))
        assert await reader.readexactly(1) == b"\x01"  # ClientInit, shared
        self.client_init.set()
        writer.write(SERVER_INIT)
        await writer.drain()
        while data := await reader.read(4096):
            self.received += data
            writer.write(b"echo:" + data)
            await writer.drain()
        writer.close()


def target(port: int, password: str = PASSWORD) -> ConsoleTarget:
    return ConsoleTarget(token_id=7, user_id=1, kind="vnc", vm_name="lab1", domain="lab1",
                         host_uri="test:///default", vnc_address="127.0.0.1", vnc_port=port,
                         vnc_password=password)


@asynccontextmanager
async def running(fake: FakeVNC, *, password: str = PASSWORD, idle: float = 30,
                  refuse: str | None = None) -> AsyncIterator[tuple[str, list]]:
    """Run the fake VNC server and a proxy whose tokens all lead to it."""
    vnc = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    vnc_port = vnc.sockets[0].getsockname()[1]
    calls: list = []

    async def redeem(**kwargs):
        calls.append(("redeem", kwargs))
        if refuse:
            raise ConsoleRefused(refuse)
        return target(vnc_port, password)

    async def close_session(**kwargs):
        calls.append(("close", kwargs))

    proxy = ConsoleProxy(Limits(idle=idle, longest=3600), redeem=redeem,
                         close_session=close_session)
    async with vnc, proxy.serve("127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}", calls


async def browser_handshake(ws) -> bytes:
    """Do what noVNC does up to ServerInit; return the ServerInit."""
    assert await ws.recv() == b"RFB 003.008\n"
    await ws.send(b"RFB 003.008\n")
    assert await ws.recv() == bytes([1, 1])  # only security type None
    await ws.send(b"\x01")
    assert await ws.recv() == struct.pack(">I", 0)
    await ws.send(b"\x01")  # ClientInit
    return await ws.recv()


def test_vnc_auth_matches_novncs_des():
    assert vnc_auth_response(PASSWORD, CHALLENGE) == EXPECTED
    assert vnc_auth_response("other", CHALLENGE) != EXPECTED
    with pytest.raises(RFBError):
        vnc_auth_response(PASSWORD, CHALLENGE[:8])


def test_the_proxy_authenticates_for_the_browser_and_relays_both_ways():
    async def scenario():
        fake = FakeVNC()
        async with running(fake) as (url, calls):
            async with connect(f"{url}/vnc?token=abc", origin=ORIGIN,
                               subprotocols=["binary"],
                               additional_headers={"Cookie": "sessionid=s1"}) as ws:
                assert ws.subprotocol == "binary"
                assert await browser_handshake(ws) == SERVER_INIT
                key_event = struct.pack(">BBxxI", 4, 1, 0x61)
                await ws.send(key_event)
                assert await ws.recv() == b"echo:" + key_event
            await asyncio.sleep(0.2)
        assert fake.answers == [EXPECTED]
        assert bytes(fake.received) == key_event
        assert calls[0] == ("redeem", {"token": "abc", "kind": "vnc", "origin": ORIGIN,
                                       "session_key": "s1"})
        assert calls[-1] == ("close", {"token_id": 7})

    asyncio.run(scenario())


def test_a_wrong_password_closes_the_websocket_without_telling_it():
    async def scenario():
        fake = FakeVNC()
        async with running(fake, password="wrong") as (url, _calls):
            async with connect(f"{url}/vnc?token=abc", origin=ORIGIN,
                               subprotocols=["binary"]) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
        assert closed.value.rcvd.code == CLOSE_UNREACHABLE
        assert "could not be opened" in closed.value.rcvd.reason
        assert "wrong" not in closed.value.rcvd.reason
        assert fake.answers and fake.answers[0] != EXPECTED

    asyncio.run(scenario())


def test_a_foreign_origin_gets_403_and_never_reaches_the_tokens():
    async def scenario():
        async with running(FakeVNC()) as (url, calls):
            for origin in ("https://evil.example", None):
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(f"{url}/vnc?token=abc", origin=origin):
                        pass
                assert refused.value.response.status_code == 403
            with pytest.raises(InvalidStatus) as unknown:
                async with connect(f"{url}/spice?token=abc", origin=ORIGIN):
                    pass
            assert unknown.value.response.status_code == 404
        assert calls == []

    asyncio.run(scenario())


def test_a_refused_token_closes_with_the_reason():
    async def scenario():
        async with running(FakeVNC(), refuse="This console link was used already.") as (url, _):
            async with connect(f"{url}/vnc?token=abc", origin=ORIGIN) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
        assert closed.value.rcvd.code == CLOSE_REFUSED
        assert closed.value.rcvd.reason == "This console link was used already."

    asyncio.run(scenario())


def test_an_idle_console_is_closed():
    async def scenario():
        fake = FakeVNC()
        async with running(fake, idle=0.6) as (url, calls):
            async with connect(f"{url}/vnc?token=abc", origin=ORIGIN,
                               subprotocols=["binary"]) as ws:
                await browser_handshake(ws)
                loop = asyncio.get_running_loop()
                started = loop.time()

                async def ask_for_updates():
                    while True:
                        await ws.send(struct.pack(">BBHHHH", 3, 1, 0, 0, 640, 480))
                        await asyncio.wait_for(ws.recv(), 1)
                        await asyncio.sleep(0.05)

                # Screen update requests are no user input: they do not keep it open.
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ask_for_updates(), 5)
                assert 0.5 <= loop.time() - started < 3
            await asyncio.sleep(0.1)
        assert closed.value.rcvd.code == CLOSE_IDLE
        assert calls[-1] == ("close", {"token_id": 7})

    asyncio.run(scenario())


def test_upstream_auth_reports_a_refusal():
    async def scenario():
        fake = FakeVNC()
        server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
        async with server:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.sockets[0].getsockname()[1])
            with pytest.raises(RFBError, match="Authentication failed"):
                await authenticate_upstream(reader, writer, "nope")
            writer.close()

    asyncio.run(scenario())


def test_client_messages_tell_input_from_update_requests():
    messages = ClientMessages()
    update = struct.pack(">BBHHHH", 3, 1, 0, 0, 640, 480)
    encodings = struct.pack(">BxH", 2, 2) + struct.pack(">ii", 0, -223)
    assert not messages.feed(encodings + update)
    pointer = struct.pack(">BBHH", 5, 0, 10, 10)
    assert messages.feed(update + pointer[:3]) is False  # half a pointer event so far
    assert messages.feed(pointer[3:]) is True
    qemu_key = struct.pack(">BBHII", 255, 0, 1, 0x61, 30)
    assert messages.feed(qemu_key) is True
    assert not messages.lost
    assert messages.feed(b"\x99junk") is True  # unknown: every message counts from now on
    assert messages.lost
