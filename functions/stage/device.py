"""A node's emulated accelerators: ``devices`` devices shared by every replica on the node.

Why files and ``fcntl`` record locks: the replicas are separate processes (forked from
zygotes of different functions), and a replica killed with ``kill -9`` must not keep a
device.  The kernel drops a process's record locks when it dies, whatever killed it;
a POSIX semaphore or a counter in shared memory would stay taken.

Layout of the directory (one per node, see ``EmulatedConfig.device_dir``)::

    dev-K        locked (exclusively) while a request runs on device K
    slot-L-K     held by the replica *bound* to device K at sharing level L

Binding: a replica binds to the first free slot in the order (L=0, K=0..N-1), (L=1,
K=0..N-1), ...: the first N replicas of the node get a device each, the next N share
one each with another replica, and so on, so devices are shared evenly.  A request
then waits (``F_SETLKW``: asleep in the kernel, no CPU) for its own device only, so
nobody waits on a busy device while another stands idle, as long as the binding is
even.  When replicas die the binding can become uneven; at most once per
``REBALANCE_S`` a replica that shares its device with more replicas than another
device has moves to that device.

Record locks belong to a process, not a thread: the caller must serialise the
threads of one replica (``EmulatedLock`` holds the replica's compute lock first).
Locks are not inherited across ``fork``, and the pool opens nothing until it is first
used, in the replica (a zygote never holds a device).
"""
from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

REBALANCE_S = 1.0
MAX_LEVELS = 4096


class DeviceError(RuntimeError):
    """The device directory cannot be used."""


class DevicePool:
    def __init__(self, directory: str | Path, devices: int,
                 rebalance_s: float = REBALANCE_S) -> None:
        if devices < 1:
            raise DeviceError(f"the device budget must be at least 1, got {devices}")
        self.dir = Path(directory)
        self.devices = int(devices)
        self._pid = 0
        self._fds: dict[str, int] = {}
        self.slot: tuple[int, int] | None = None  # (level, device) this replica is bound to
        self._held = False
        self._checked = 0.0
        self.rebalance_s = rebalance_s

    # ------------------------------------------------------------------ files

    def _fd(self, name: str) -> int:
        fd = self._fds.get(name)
        if fd is None:
            try:
                fd = os.open(self.dir / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as e:
                raise DeviceError(f"device directory {self.dir}: {e.strerror}") from e
            self._fds[name] = fd
        return fd

    def _try(self, name: str) -> bool:
        """Lock ``name`` without waiting; False when another process holds it."""
        try:
            fcntl.lockf(self._fd(name), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise

    def _unlock(self, name: str) -> None:
        fcntl.lockf(self._fd(name), fcntl.LOCK_UN)

    def _reset_after_fork(self) -> None:
        """Descriptors inherited from the process that forked us carry no locks here:
        close them (this releases nothing of the parent's) and start unbound."""
        if self._pid == os.getpid():
            return
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds, self.slot, self._held, self._pid = {}, None, False, os.getpid()
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise DeviceError(f"cannot create the device directory {self.dir}: "
                              f"{e.strerror}") from e

    # ------------------------------------------------------------------ binding

    def bind(self) -> int:
        """The device this replica runs on, binding (or rebalancing) when due."""
        self._reset_after_fork()
        if self.slot is None:
            self.slot = self._first_free()
            self._checked = time.monotonic()
        elif self.slot[0] > 0 and time.monotonic() - self._checked >= self.rebalance_s:
            self._checked = time.monotonic()
            self._rebalance()
        return self.slot[1]

    def _first_free(self, below: int = MAX_LEVELS, only: int | None = None
                    ) -> tuple[int, int]:
        for level in range(below):
            for k in range(self.devices) if only is None else (only,):
                if self._try(f"slot-{level}-{k}"):
                    return level, k
        raise DeviceError(f"no free slot below level {below} in {self.dir}")

    def occupancy(self) -> list[int]:
        """Replicas bound to each device (probing the slot locks; ours counts as held)."""
        self._reset_after_fork()
        occ = [0] * self.devices
        for level in range(MAX_LEVELS):
            names = [f"slot-{level}-{k}" for k in range(self.devices)]
            if not any((self.dir / n).exists() for n in names):
                break
            for k, n in enumerate(names):
                if self.slot == (level, k):
                    occ[k] += 1
                elif not (self.dir / n).exists():
                    continue
                elif self._try(n):
                    self._unlock(n)  # free: we only probed it
                else:
                    occ[k] += 1
        return occ

    def _rebalance(self) -> None:
        """Move to a device with at least two replicas fewer than ours (then the move
        evens the load instead of swapping it)."""
        assert self.slot is not None
        occ = self.occupancy()
        level, k = self.slot
        target = min(range(self.devices), key=lambda j: occ[j])
        if occ[target] + 2 > occ[k]:
            return
        try:
            new = self._first_free(only=target)
        except DeviceError:
            return
        self._unlock(f"slot-{level}-{k}")
        self.slot = new

    # ------------------------------------------------------------------ requests

    def acquire(self) -> int:
        """Wait, asleep, until this replica's device is free; returns its index."""
        k = self.bind()
        fcntl.lockf(self._fd(f"dev-{k}"), fcntl.LOCK_EX)  # F_SETLKW: blocks in the kernel
        self._held = True
        return k

    def release(self) -> None:
        if self._held and self.slot is not None:
            self._held = False
            self._unlock(f"dev-{self.slot[1]}")

    def close(self) -> None:
        """Release everything (a replica that exits or dies gets the same from the kernel)."""
        if self._pid != os.getpid():
            return
        for fd in self._fds.values():
            os.close(fd)
        self._fds, self.slot, self._held = {}, None, False
