"""The host itself: what it offers, and the acceleration and CPU mode its guests get."""

from __future__ import annotations

from .base import HypervisorBase
from .connection import cached_probe, remember_probe
from .errors import VirtError
from .facts import HostFacts, ProbeReport
from .probe import ShapeBuilder, run_probe


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


class Host(HypervisorBase):
    """Facts and the acceleration probe of one host."""

    def facts(self) -> HostFacts:
        """Return what the host offers; acceleration and CPU mode are those last probed."""
        conn = self._conn()
        with self._doing("read facts of", "host"):
            _model, memory_mib, cpus, *_rest = conn.getInfo()
            driver = conn.getType()
            report = self._test_driver_report(driver) or cached_probe(self.uri)
            return HostFacts(
                hostname=conn.getHostname(),
                cpus=cpus,
                memory_mib=memory_mib,
                accel=report.accel if report else "",
                libvirt_version=_version(conn.getLibVersion()),
                hypervisor=f"{driver} {_version(conn.getVersion())}",
                cpu_mode=report.cpu_mode if report else "",
            )

    @staticmethod
    def _test_driver_report(driver: str) -> ProbeReport | None:
        # libvirt's test driver runs no guests; there is nothing to probe.
        return ProbeReport("test", "") if driver.upper() == "TEST" else None

    def probe(self, shape: ShapeBuilder, *, accel_pin: str = "", cpu_mode_pin: str = "",
              fresh: bool = False, settle_s: float | None = None) -> ProbeReport:
        """Find the acceleration and CPU mode that run guests of this shape; cached per URI.

        shape(domain type, CPU mode) returns the XML of a throw-away domain shaped like the
        portal's VMs; each must keep running for settle_s seconds. Pins are used as given;
        the chain is still tried and reported.
        """
        pins = (accel_pin, cpu_mode_pin)
        if not fresh and (report := cached_probe(self.uri, pins)) is not None:
            return report
        conn = self._conn()
        with self._doing("probe", "acceleration of host"):
            report = self._test_driver_report(conn.getType())
            if report is None:
                try:
                    report = run_probe(conn, self.uri, shape, accel_pin=accel_pin,
                                       cpu_mode_pin=cpu_mode_pin, settle_s=settle_s)
                except ValueError as exc:
                    raise VirtError(f"cannot probe host {self.uri}: {exc}") from exc
        remember_probe(self.uri, pins, report)
        return report
