"""Run the console proxy: websockets from browsers to VNC and serial consoles."""

from __future__ import annotations

import asyncio
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from console.conf import listen_address
from console.proxy import Limits, run_proxy


class Command(BaseCommand):
    """Serve the browser console on PORTAL_CONSOLE_LISTEN until stopped."""

    help = "Run the websocket proxy of the browser console (VNC and serial)."

    def add_arguments(self, parser: CommandParser) -> None:
        """Take an optional host:port that overrides PORTAL_CONSOLE_LISTEN."""
        parser.add_argument("--listen", help="host:port (default: PORTAL_CONSOLE_LISTEN)")

    def handle(self, *args: object, **options: object) -> None:
        """Serve until SIGTERM or SIGINT."""
        try:
            host, port = listen_address(options.get("listen") or None)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        limits = Limits(idle=settings.PORTAL_CONSOLE_IDLE_SECONDS,
                        longest=settings.PORTAL_CONSOLE_MAX_SECONDS)
        self.stdout.write(f"Console proxy on {host}:{port} (Ctrl-C stops it)")

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            await run_proxy(host, port, limits, stop)

        try:
            asyncio.run(main())
        except OSError as exc:
            raise CommandError(f"cannot listen on {host}:{port}: {exc}") from exc
