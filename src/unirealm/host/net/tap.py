"""kvmtool's `-n mode=tap`: the guest's NIC is a tap device of the host (Linux tun/tap,
IFF_TAP|IFF_NO_PI), and its frames go straight between the tap's file descriptor and the
virtio-net device, whole, with no stack of the VMM's in between.

As kvmtool does it (virtio/net.c):

- `fd=N`: a tap file descriptor the caller already opened and configured is used as is;
- otherwise /dev/net/tun is opened and TUNSETIFF attaches to the tap `tapif=NAME` (created
  if it does not exist and the caller may, CAP_NET_ADMIN) or to a new tapN;
- `script=PATH` runs PATH with the tap's name to set it up (its failure is the run's), and
  `downscript=PATH` likewise when the VMM stops; with `script=none` and no `tapif`, the VMM
  itself gives the tap `host_ip` and brings it up (a named tap is the caller's to set up).

Frames are moved in the VMM's one thread: `input(frame)` writes one frame (a full tap
queue drops it, as a wire would), `poll(timeout)` reads what the host sent into the
device's RX backlog.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import select
import socket
import subprocess
from collections.abc import Callable

from unirealm.arch.net import (
    ETH_FRAME_MAX,
    IFF_NO_PI,
    IFF_RUNNING,
    IFF_TAP,
    IFF_UP,
    IFNAMSIZ,
    IFREQ_SIZE,
    SIOCGIFFLAGS,
    SIOCSIFADDR,
    SIOCSIFFLAGS,
    TUNGETIFF,
    TUNSETIFF,
    ifreq_addr,
    ifreq_flags,
    ifreq_get_flags,
    ifreq_name,
)

log = logging.getLogger("unirealm.tap")

TUN_DEVICE = "/dev/net/tun"
READ_BURST = 64  # frames read from the tap per poll; the device backlog bounds the rest
READ_SIZE = ETH_FRAME_MAX + 4 + 64  # a VLAN tag and slack: longer frames are cut and dropped
SCRIPT_TIMEOUT = 30.0


class TapError(Exception):
    """The tap cannot be opened or set up; one line."""


def _script(path: str, ifname: str, what: str) -> None:
    try:
        res = subprocess.run([path, ifname], stdin=subprocess.DEVNULL, capture_output=True, timeout=SCRIPT_TIMEOUT,
                             check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise TapError(f"-n {what}={path}: {getattr(exc, 'strerror', None) or exc}") from None
    if res.returncode != 0:
        tail = res.stderr.decode(errors="replace").strip().splitlines()
        raise TapError(f"-n {what}={path} failed (exit {res.returncode}){': ' + tail[-1] if tail else ''}")


class TapNet:
    """One tap device. `output(frame)` carries frames to the guest."""

    def __init__(self, output: Callable[[bytes], None], tapif: str | None = None, host_ip: bytes | None = None,
                 script: str = "none", downscript: str = "none", fd: int | None = None) -> None:
        self.output = output
        self.downscript = downscript
        self.frames_in = self.frames_out = self.dropped = 0
        self.own_fd = fd is None
        if fd is not None:
            self.fd = fd
            try:
                raw = fcntl.ioctl(fd, TUNGETIFF, bytes(IFREQ_SIZE))
            except OSError as exc:
                raise TapError(f"-n fd={fd}: not a tap device ({exc.strerror or exc})") from None
            if not ifreq_get_flags(raw) & IFF_TAP:
                raise TapError(f"-n fd={fd}: a tun device, not a tap")
            self.ifname = ifreq_name(raw)
        else:
            if tapif is not None and not 0 < len(tapif.encode()) < IFNAMSIZ:
                raise TapError(f"-n tapif={tapif}: an interface name is 1 to {IFNAMSIZ - 1} bytes")
            try:
                self.fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
            except OSError as exc:
                raise TapError(f"-n mode=tap: cannot open {TUN_DEVICE}: {exc.strerror}") from None
            try:
                raw = fcntl.ioctl(self.fd, TUNSETIFF, ifreq_flags(tapif or "", IFF_TAP | IFF_NO_PI))
            except OSError as exc:
                os.close(self.fd)
                hint = " (needs CAP_NET_ADMIN: run as root)" if exc.errno == errno.EPERM else ""
                raise TapError(f"-n mode=tap: tap {tapif or '(new)'}: {exc.strerror}{hint}") from None
            self.ifname = ifreq_name(raw)
        os.set_blocking(self.fd, False)
        try:
            if script != "none":
                _script(script, self.ifname, "script")
            elif tapif is None and fd is None and host_ip is not None:
                self._configure(host_ip)
        except TapError:
            self.close(run_downscript=False)
            raise
        self._poller = select.poll()
        self._poller.register(self.fd, select.POLLIN)
        log.info("tap %s", self.ifname)

    def _configure(self, host_ip: bytes) -> None:
        """kvmtool with script=none: host_ip on the tap, and the tap up."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                fcntl.ioctl(sock, SIOCSIFADDR, ifreq_addr(self.ifname, host_ip))
                flags = ifreq_get_flags(fcntl.ioctl(sock, SIOCGIFFLAGS, ifreq_flags(self.ifname, 0)))
                fcntl.ioctl(sock, SIOCSIFFLAGS, ifreq_flags(self.ifname, flags | IFF_UP | IFF_RUNNING))
            except OSError as exc:
                raise TapError(f"-n mode=tap: cannot set up {self.ifname}: {exc.strerror}") from None

    def close(self, run_downscript: bool = True) -> None:
        if self.fd < 0:
            return
        if run_downscript and self.downscript != "none":
            try:
                _script(self.downscript, self.ifname, "downscript")
            except TapError as exc:
                log.warning("%s", exc)
        if self.own_fd:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        self.fd = -1

    def input(self, frame: bytes) -> None:
        """One frame the guest transmitted, to the host."""
        self.frames_in += 1
        try:
            os.write(self.fd, frame)
        except (BlockingIOError, InterruptedError):
            self.dropped += 1  # the tap's queue is full: the frame is lost, as on a wire
        except OSError as exc:
            self.dropped += 1
            if exc.errno not in (errno.EIO, errno.EINVAL):  # EIO: the tap is down
                log.info("tap %s: %s", self.ifname, exc.strerror)

    def watched(self) -> dict[int, int]:
        """The descriptor a sleeping VMM waits on (fd -> poll mask)."""
        return {self.fd: select.POLLIN} if self.fd >= 0 else {}

    def next_deadline(self) -> float | None:
        return None  # a tap has no timers: only its descriptor wakes the VMM

    def poll(self, timeout: float = 0.0) -> None:
        """Frames the host sent, to the guest (waiting at most `timeout` seconds for one)."""
        if self.fd < 0:
            return
        if timeout > 0 and not self._poller.poll(int(timeout * 1000)):
            return
        for _ in range(READ_BURST):
            try:
                frame = os.read(self.fd, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # EIO while the tap is down
            if not frame:
                return
            if len(frame) > READ_SIZE - 64:
                self.dropped += 1
                continue
            self.frames_out += 1
            self.output(frame)
