"""Requests in flight per target across the instance's workers, for the `least_busy` strategy.

Each worker counts its own in a small file of its own in the instance's directory (`$FERROUTE_METRICS_DIR`, beside
its metrics snapshot and lock file: `<worker>.<targets' digest>.inflight`), mapped into memory: one signed 64-bit
count per slot, a slot per target of a `least_busy` route, in the config's order. A worker reads only the files of
the same targets in the same order (the digest in the name): during a reload that changed them, the old workers'
counts and the new ones' are not mixed. A worker writes only its own file, one aligned 8-byte store per change; a
pick reads every other live worker's count for each target, straight from their mapped files (no system call, no
lock). The other workers' files are looked for again at most every `RESCAN` seconds; one whose worker died (its lock
file's `flock` released, the rule of `ferroute.metrics`) is dropped and removed, so a crashed worker's requests stop
counting within that time.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import time
from pathlib import Path

from ferroute.metrics import worker_alive

RESCAN = 1.0  # seconds between looks for other workers' files
_SUFFIX = ".inflight"


class InFlight:
    """This worker's counts (`put`) and the other workers' (`others`), by slot."""

    def __init__(self, directory: Path, name: str, targets: list[str]) -> None:
        self.directory = directory
        self.name = name
        self.size = 8 * len(targets)
        digest = hashlib.sha256("\n".join(targets).encode()).hexdigest()[:16]
        self.suffix = f".{digest}{_SUFFIX}"
        path = directory / f"{name}{self.suffix}"
        temporary = directory / f".{name}{self.suffix}.tmp"
        temporary.write_bytes(bytes(self.size))  # (whole before it has its name: a reader never sees it short)
        os.replace(temporary, path)
        self.path = path
        self._map, self.mine = _mapped(path, self.size, writable=True)
        self._others: dict[str, tuple[mmap.mmap, memoryview]] = {}  # worker name -> its mapped counts
        self.views: list[memoryview] = []
        self.scanned = -RESCAN

    def put(self, slot: int, count: int) -> None:
        """This worker's count for `slot` is now `count`."""
        self.mine[slot] = count

    def others(self, slot: int) -> int:
        """The other live workers' requests in flight at `slot`."""
        if time.monotonic() - self.scanned >= RESCAN:
            self.rescan()
        return sum(view[slot] for view in self.views)

    def rescan(self) -> None:
        """Map the files of workers started since, drop (and remove) those of workers gone."""
        self.scanned = time.monotonic()
        found: set[str] = set()
        for path in self.directory.glob(f"*{self.suffix}"):
            name = path.name[: -len(self.suffix)]
            if name == self.name:
                continue
            if not worker_alive(self.directory, name):
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            found.add(name)
            if name not in self._others:
                with contextlib.suppress(OSError, ValueError):
                    self._others[name] = _mapped(path, self.size, writable=False)
        for name in [n for n in self._others if n not in found]:
            _close(*self._others.pop(name))
        self.views = [view for _, view in self._others.values()]

    def close(self) -> None:
        """At the worker's end: its file removed, the mappings closed."""
        with contextlib.suppress(OSError):
            self.path.unlink()
        for pair in self._others.values():
            _close(*pair)
        self._others.clear()
        self.views = []
        _close(self._map, self.mine)


def _mapped(path: Path, size: int, *, writable: bool) -> tuple[mmap.mmap, memoryview]:
    """`path` mapped (it must hold `size` bytes), as 64-bit counts."""
    with open(path, "r+b" if writable else "rb") as file:
        if os.fstat(file.fileno()).st_size != size:
            raise ValueError(f"{path} is not {size} bytes")
        mapping = mmap.mmap(file.fileno(), size, access=mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ)
    return mapping, memoryview(mapping).cast("q")


def _close(mapping: mmap.mmap, view: memoryview) -> None:
    view.release()
    mapping.close()
