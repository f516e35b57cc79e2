"""Route targets' circuit breakers for the whole instance: under `ferroute serve`, every worker reads and changes
the same circuits, so `breaker_failures` failures in a row open a target for every worker, and after
`breaker_cooldown` one probe goes for the instance (not one per worker).

The circuits live in one small file in the instance's directory (`$FERROUTE_METRICS_DIR`, where the metrics and the
`least_busy` counts are: `circuits.<targets' digest>.state`), mapped into memory by every worker: per target (a slot,
in the config's order), its failures in a row (a signed 64-bit count), when it may be probed (`open_until`, a
`time.monotonic()` reading, 0 while closed; the monotonic clock is the machine's, the same in every process) and
until when the probe under way holds it (`probe_until`). A pick reads them straight from the mapping (no system
call, no lock); a change (a failure, the first success after failures, a probe's start or end) is made under the
file's `flock`, held for a few reads and writes. A healthy target's requests change nothing, so they never take
the lock.

The probe holds the circuit for `breaker_cooldown` (at least `PROBE_LEASE_MIN` seconds): a worker that dies in the
middle of its probe, or a probe that never gets its verdict, lets another go after that.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import mmap
import os
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("ferroute.routing")

PROBE_LEASE_MIN = 5.0  # seconds a probe holds an open circuit at least
_SLOT = 4  # 8-byte words per target: failures (q), open_until (d), probe_until (d), unused
_FAILURES, _OPEN_UNTIL, _PROBE_UNTIL = 0, 1, 2


class Circuits:
    """The instance's circuits file, mapped: its slots (`SharedBreaker`s read and change them) and its lock."""

    def __init__(self, directory: Path, targets: list[str]) -> None:
        digest = hashlib.sha256("\n".join(targets).encode()).hexdigest()[:16]
        self.path = directory / f"circuits.{digest}.state"
        size = 8 * _SLOT * len(targets)
        if not self.path.exists():
            # Whole before it has its name, and named once: the first worker's file is everyone's (`link` fails
            # for the others, which map the one that won).
            temporary = directory / f".circuits.{digest}.{os.getpid()}.tmp"
            temporary.write_bytes(bytes(size))
            with contextlib.suppress(FileExistsError):
                os.link(temporary, self.path)
            with contextlib.suppress(OSError):
                temporary.unlink()
        self._fd = os.open(self.path, os.O_RDWR)
        try:
            if os.fstat(self._fd).st_size != size:
                raise ValueError(f"{self.path} is not {size} bytes")
            self._map = mmap.mmap(self._fd, size, access=mmap.ACCESS_WRITE)
        except BaseException:
            os.close(self._fd)
            raise
        self.counts = memoryview(self._map).cast("q")
        self.times = memoryview(self._map).cast("d")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The file's lock, across the instance's workers (held for a few reads and writes)."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """At the worker's end (the file stays: the instance's directory goes with it)."""
        self.counts.release()
        self.times.release()
        self._map.close()
        os.close(self._fd)


class SharedBreaker:
    """A target's circuit in the instance's `Circuits` (slot `slot`), with `Breaker`'s rules and interface: the
    threshold and cooldown are this worker's config (the same in every worker of an instance)."""

    __slots__ = ("_base", "circuits", "cooldown", "lease", "probing", "target", "threshold")

    def __init__(self, target: str, threshold: int, cooldown: float, circuits: Circuits, slot: int) -> None:
        self.target = target
        self.threshold = threshold
        self.cooldown = cooldown
        self.lease = max(cooldown, PROBE_LEASE_MIN)
        self.circuits = circuits
        self._base = _SLOT * slot
        self.probing = False  # this worker's attempt is the probe under way
        with circuits.locked():
            # (A reading from before the machine's clock began again — a directory kept across a reboot — is
            # further away than any circuit sets it: dropped.)
            now = time.monotonic()
            times = circuits.times
            if times[self._base + _OPEN_UNTIL] > now + cooldown or times[self._base + _PROBE_UNTIL] > now + self.lease:
                self._reset()

    @property
    def open_until(self) -> float:
        """0 while closed; else when a probe may go (monotonic seconds)."""
        return self.circuits.times[self._base + _OPEN_UNTIL]

    @property
    def is_open(self) -> bool:
        return self.circuits.times[self._base + _OPEN_UNTIL] != 0.0

    @property
    def failures(self) -> int:
        return self.circuits.counts[self._base + _FAILURES]

    def allows(self, now: float) -> bool:
        """Whether an attempt may go to the target now (closed; or open, cooled down, and no probe under way)."""
        times = self.circuits.times
        open_until = times[self._base + _OPEN_UNTIL]
        return not open_until or (now >= open_until and times[self._base + _PROBE_UNTIL] <= now)

    def enter(self, now: float) -> bool:
        """An attempt that `allows` said may go begins; True when it is the probe of an open circuit (this worker
        holds it, for the instance, until its verdict or the lease's end)."""
        times = self.circuits.times
        base = self._base
        if not times[base + _OPEN_UNTIL]:
            return False
        with self.circuits.locked():
            open_until = times[base + _OPEN_UNTIL]
            if open_until and now >= open_until and times[base + _PROBE_UNTIL] <= now:
                times[base + _PROBE_UNTIL] = now + self.lease
                self.probing = True
                return True
        return False

    def succeeded(self) -> None:
        base = self._base
        circuits = self.circuits
        if not circuits.counts[base + _FAILURES] and not circuits.times[base + _OPEN_UNTIL]:
            return  # (healthy: nothing to change, no lock)
        with circuits.locked():
            was_open = circuits.times[base + _OPEN_UNTIL] != 0.0
            self._reset()
        self.probing = False
        if was_open:
            log_closed(self.target)

    def failed(self, now: float, reason: str) -> None:
        base = self._base
        counts, times = self.circuits.counts, self.circuits.times
        with self.circuits.locked():
            counts[base + _FAILURES] += 1
            failures = counts[base + _FAILURES]
            again = self.probing
            opens = again or (not times[base + _OPEN_UNTIL] and failures >= self.threshold)
            if opens:
                times[base + _OPEN_UNTIL] = now + self.cooldown
                times[base + _PROBE_UNTIL] = 0.0
        self.probing = False
        if opens:
            log_opened(self.target, again, failures, reason, self.cooldown)

    def abandon(self, probe: bool) -> None:
        """An attempt ended with no verdict (the client left first): a probe it was may be made again."""
        if probe and self.probing:
            self.probing = False
            with self.circuits.locked():
                self.circuits.times[self._base + _PROBE_UNTIL] = 0.0

    def _reset(self) -> None:
        """Closed, no failures, no probe (under the lock)."""
        base = self._base
        self.circuits.counts[base + _FAILURES] = 0
        self.circuits.times[base + _OPEN_UNTIL] = 0.0
        self.circuits.times[base + _PROBE_UNTIL] = 0.0


def log_opened(target: str, again: bool, failures: int, reason: str, cooldown: float) -> None:
    """A circuit opened (`again`: its probe failed), as the log says it (`Breaker` and `SharedBreaker` alike)."""
    if again:
        log.warning("circuit of target %s open again: the probe failed (%s)", target, reason)
    else:
        log.warning(
            "circuit of target %s opened after %d failures in a row (last: %s); probed again in %g s",
            target,
            failures,
            reason,
            cooldown,
        )


def log_closed(target: str) -> None:
    log.warning("circuit of target %s closed: the probe succeeded", target)
