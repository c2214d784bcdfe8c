"""The RFB (VNC) handshake, done by the proxy on the user's behalf; asyncio, no Django.

Towards the VM the proxy is a client that answers "VNC Authentication" with the VM's password;
towards the browser it is a server that offers security type None. After both handshakes the
bytes flow unchanged, so the browser never learns the password.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

VERSION_38 = b"RFB 003.008\n"
SEC_INVALID = 0
SEC_NONE = 1
SEC_VNC_AUTH = 2
CHALLENGE_SIZE = 16
HANDSHAKE_TIMEOUT = 10.0


class RFBError(Exception):
    """A VNC server or browser did not follow the handshake."""


def _reverse_bits(byte: int) -> int:
    return int(f"{byte:08b}"[::-1], 2)


def vnc_auth_response(password: str, challenge: bytes) -> bytes:
    """Return the DES answer to a VNC Authentication challenge.

    The key is the password cut or padded with NULs to 8 bytes, each byte's bits mirrored
    (a quirk of the original VNC). DES in ECB encrypts the 16-byte challenge; TripleDES with
    the same key three times is single DES.
    """
    if len(challenge) != CHALLENGE_SIZE:
        raise RFBError(f"a VNC challenge has {CHALLENGE_SIZE} bytes, not {len(challenge)}")
    key = bytes(_reverse_bits(b) for b in password.encode("latin-1")[:8].ljust(8, b"\0"))
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()  # noqa: S305 - RFB's own
    return encryptor.update(challenge) + encryptor.finalize()


def _parse_version(data: bytes) -> tuple[int, int]:
    if len(data) != 12 or not data.startswith(b"RFB ") or data[7:8] != b"." or data[-1:] != b"\n":
        raise RFBError(f"not an RFB version: {data[:12]!r}")
    try:
        return int(data[4:7]), int(data[8:11])
    except ValueError:
        raise RFBError(f"not an RFB version: {data!r}") from None


async def _read_reason(reader: asyncio.StreamReader) -> str:
    (length,) = struct.unpack(">I", await reader.readexactly(4))
    return (await reader.readexactly(min(length, 4096))).decode("utf-8", "replace")


async def authenticate_upstream(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, password: str
) -> None:
    """Complete the RFB 3.8 security handshake with a VNC server, as its client."""
    major, minor = _parse_version(await reader.readexactly(12))
    if (major, minor) < (3, 8):
        raise RFBError(f"the VNC server speaks RFB {major}.{minor}; 3.8 is needed")
    writer.write(VERSION_38)
    await writer.drain()
    (count,) = await reader.readexactly(1)
    if count == 0:
        raise RFBError(f"the VNC server refused the connection: {await _read_reason(reader)}")
    offered = set(await reader.readexactly(count))
    if password and SEC_VNC_AUTH in offered:
        chosen = SEC_VNC_AUTH
    elif SEC_NONE in offered:
        chosen = SEC_NONE
    else:
        raise RFBError(f"the VNC server offers no security type the proxy knows: {offered}")
    writer.write(bytes([chosen]))
    await writer.drain()
    if chosen == SEC_VNC_AUTH:
        challenge = await reader.readexactly(CHALLENGE_SIZE)
        writer.write(vnc_auth_response(password, challenge))
        await writer.drain()
    (result,) = struct.unpack(">I", await reader.readexactly(4))
    if result != 0:
        raise RFBError(f"the VNC server refused the password: {await _read_reason(reader)}")


class Inbox:
    """Read exact byte counts from a stream of websocket messages, keeping what is left over."""

    def __init__(self, receive: Callable[[], Awaitable[bytes]]) -> None:
        """Wrap a coroutine function that returns the browser's next message."""
        self._receive = receive
        self._buffer = bytearray()

    async def readexactly(self, size: int) -> bytes:
        """Return exactly size bytes, waiting for more messages as needed."""
        while len(self._buffer) < size:
            self._buffer += await self._receive()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def leftover(self) -> bytes:
        """Return and forget the bytes received beyond the last read."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


async def greet_browser(inbox: Inbox, send: Callable[[bytes], Awaitable[None]]) -> None:
    """Complete the RFB 3.8 security handshake with the browser, offering only None."""
    await send(VERSION_38)
    major, minor = _parse_version(await inbox.readexactly(12))
    if (major, minor) != (3, 8):
        await send(b"\0" + _reason("the console speaks RFB 3.8 only"))
        raise RFBError(f"the browser speaks RFB {major}.{minor}, not 3.8")
    await send(bytes([1, SEC_NONE]))
    (chosen,) = await inbox.readexactly(1)
    if chosen != SEC_NONE:
        await send(struct.pack(">I", 1) + _reason("only security type None is offered"))
        raise RFBError(f"the browser chose security type {chosen}, not None")
    await send(struct.pack(">I", 0))


def _reason(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">I", len(data)) + data


# Client-to-server message sizes, to tell key and pointer input from screen update requests.
_FIXED_SIZES = {0: 20, 3: 10, 4: 8, 5: 6, 150: 10, 250: 4}
INPUT_TYPES = frozenset({4, 5, 255})


class ClientMessages:
    """Follow the browser's RFB messages after the handshake to notice real user input.

    Only message boundaries are parsed; the bytes themselves are relayed untouched. An unknown
    message type stops the parsing and from then on every message counts as input.
    """

    def __init__(self) -> None:
        """Start at a message boundary."""
        self._buffer = bytearray()
        self.lost = False

    def feed(self, data: bytes) -> bool:
        """Take the next bytes from the browser; return whether they held user input."""
        if self.lost:
            return True
        self._buffer += data
        saw_input = False
        while self._buffer:
            size = self._size()
            if size is None:
                break
            if size < 0:
                self.lost = True
                self._buffer.clear()
                return True
            if len(self._buffer) < size:
                break
            saw_input |= self._buffer[0] in INPUT_TYPES
            del self._buffer[:size]
        return saw_input

    def _size(self) -> int | None:
        """Return the size of the message at the buffer's start, None if unknown yet, -1 if lost."""
        buf, kind = self._buffer, self._buffer[0]
        if kind in _FIXED_SIZES:
            return _FIXED_SIZES[kind]
        if kind == 2:  # SetEncodings
            return None if len(buf) < 4 else 4 + 4 * struct.unpack(">H", buf[2:4])[0]
        if kind == 6:  # ClientCutText; a negative length is the extended clipboard
            return None if len(buf) < 8 else 8 + abs(struct.unpack(">i", buf[4:8])[0])
        if kind == 248:  # ClientFence
            return None if len(buf) < 9 else 9 + buf[8]
        if kind == 251:  # SetDesktopSize
            return None if len(buf) < 7 else 8 + 16 * buf[6]
        if kind == 255:  # QEMU: extended key event, audio
            if len(buf) < 2:
                return None
            if buf[1] == 0:
                return 12
            if buf[1] == 1:
                if len(buf) < 4:
                    return None
                return 10 if struct.unpack(">H", buf[2:4])[0] == 2 else 4
        return -1
