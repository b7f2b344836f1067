"""A user-mode network (kvmtool's `-n mode=user`): the guest's NIC is wired to libslirp
(the TCP/IP stack QEMU and podman use for the same purpose), which terminates the guest's
connections in ordinary host sockets, so no privilege and no tap device are needed. The
binding is ctypes (`libslirp.py`); this module owns one slirp stack per NIC.

What the guest sees, on the NIC's /24 network (kvmtool's defaults):

- the gateway at host_ip (192.168.33.1): it answers ARP (with libslirp's MAC for it,
  52:55 followed by the address) and ICMP echo; TCP and UDP sent to it reach the host's
  127.0.0.1, anything beyond the subnet goes out through a host socket to its address;
- DHCP (RFC 2131) handing out guest_ip (the first address of the pool) with the /24 mask,
  the gateway as router and `dns_ip(...)` (host_ip's network .3, as QEMU's 10.0.2.3) as
  the DNS server; libslirp relays queries to it to the host's own nameserver;
- inbound forwarding (`hostfwd=tcp:127.0.0.1:HOSTPORT-:GUESTPORT`, an extension of
  kvmtool's options): libslirp listens on the loopback address, each client becomes a
  connection to guest_ip:GUESTPORT from the gateway's address.

No IPv6, no TFTP/BOOTP file, no "emulation" of FTP/IRC. Everything runs in the VMM's one
thread: `poll(timeout)` (at exits and WFIs) lets libslirp fill a poll set, waits on it at
most `timeout` seconds (less when libslirp's TCP timers are due), hands back the events and
fires the timers it created; `input(frame)` gives it each frame the guest transmits; the
frames it emits go to `output` (the virtio-net device's RX backlog) from inside those calls.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import os
import select
import socket
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from unirealm.arch.net import (
    KVMTOOL_GATEWAY_IP,
    KVMTOOL_GUEST_IP,
    KVMTOOL_PREFIX,
    ip_bytes,
    ip_int,
    prefix_mask,
)

from . import libslirp
from .libslirp import (
    SLIRP_CONFIG_VERSION,
    SLIRP_POLL_ERR,
    SLIRP_POLL_HUP,
    SLIRP_POLL_IN,
    SLIRP_POLL_OUT,
    SLIRP_POLL_PRI,
    In6Addr,
    SlirpCb,
    SlirpConfig,
    in_addr,
)

log = logging.getLogger("unirealm.usernet")

MTU = 1500
DNS_HOST = 3  # the DNS server's host number on the NIC's network (QEMU: 10.0.2.3)
SLIRP_HORIZON_MS = 1000  # the longest a poll set is trusted without asking libslirp again

# poll(2) bits <-> SLIRP_POLL_* bits
_TO_POLL = ((SLIRP_POLL_IN, select.POLLIN), (SLIRP_POLL_OUT, select.POLLOUT), (SLIRP_POLL_PRI, select.POLLPRI))
_FROM_POLL = ((select.POLLIN, SLIRP_POLL_IN), (select.POLLOUT, SLIRP_POLL_OUT), (select.POLLPRI, SLIRP_POLL_PRI),
              (select.POLLERR, SLIRP_POLL_ERR), (select.POLLHUP, SLIRP_POLL_HUP), (select.POLLNVAL, SLIRP_POLL_ERR))


class UserNetError(Exception):
    """A set-up problem (no libslirp, a forwarded port that cannot be bound); one line."""


@dataclass(frozen=True)
class Forward:
    """A TCP port forward from a host loopback address to a guest port."""

    host_addr: str
    host_port: int
    guest_port: int


def dns_ip(guest_ip: bytes, gateway_ip: bytes, prefix: int = KVMTOOL_PREFIX) -> bytes:
    """The DNS server's address: host number 3 of the network, or the next one that is
    neither the guest nor the gateway (libslirp sends every port of that address to the
    host's nameserver, so it cannot be the gateway's own)."""
    net = ip_int(gateway_ip) & ip_int(prefix_mask(prefix))
    for host in range(DNS_HOST, (1 << (32 - prefix)) - 1):
        raw = (net | host).to_bytes(4, "big")
        if raw not in (guest_ip, gateway_ip):
            return raw
    raise UserNetError("no free address for the DNS server on the guest's network")


class UserNet:
    """One libslirp stack. `output(frame)` carries frames to the guest."""

    def __init__(
        self,
        output: Callable[[bytes], None],
        guest_ip: bytes = KVMTOOL_GUEST_IP,
        gateway_ip: bytes = KVMTOOL_GATEWAY_IP,
        prefix: int = KVMTOOL_PREFIX,
        forwards: Sequence[Forward] = (),
    ) -> None:
        try:
            self.lib = libslirp.load()
        except libslirp.LibslirpMissing as exc:
            raise UserNetError(str(exc)) from None
        self.output = output
        self.guest_ip, self.gateway_ip = bytes(guest_ip), bytes(gateway_ip)
        self.mask = prefix_mask(prefix)
        self.dns_ip = dns_ip(self.guest_ip, self.gateway_ip, prefix)
        self.frames_in = 0
        self.frames_out = 0
        self.guest_errors = 0
        self.timers: dict[int, list] = {}  # handle -> [timer id, cb_opaque, expiry in ms or None]
        self._next_timer = 1
        self._fds: list[tuple[int, int]] = []  # the poll set of one poll(): (fd, poll events)
        self._revents: dict[int, int] = {}
        self._poller = select.poll()
        self._registered: dict[int, int] = {}
        self._dirty = True  # libslirp was called since its poll set was filled
        self._due_ms = 0  # its next timer (monotonic ms)

        net = ip_int(self.gateway_ip) & ip_int(self.mask)
        self.cfg = SlirpConfig(
            version=SLIRP_CONFIG_VERSION,
            restricted=0,
            in_enabled=True,
            vnetwork=in_addr(net.to_bytes(4, "big")),
            vnetmask=in_addr(self.mask),
            vhost=in_addr(self.gateway_ip),
            in6_enabled=False,
            vprefix_addr6=In6Addr(),
            vhost6=In6Addr(),
            vdhcp_start=in_addr(self.guest_ip),
            vnameserver=in_addr(self.dns_ip),
            vnameserver6=In6Addr(),
            if_mtu=MTU,
            if_mru=MTU,
            disable_host_loopback=False,
            enable_emu=False,
        )
        # The callbacks must outlive the stack (libslirp keeps the SlirpCb pointer).
        self.cb = SlirpCb(
            send_packet=libslirp.SendPacketFn(self._send_packet),
            guest_error=libslirp.GuestErrorFn(self._guest_error),
            clock_get_ns=libslirp.ClockGetNsFn(lambda _opaque: time.monotonic_ns()),
            timer_new=libslirp.TimerNewFn(0),
            timer_free=libslirp.TimerFreeFn(self._timer_free),
            timer_mod=libslirp.TimerModFn(self._timer_mod),
            register_poll_fd=libslirp.PollFdFn(lambda _fd, _opaque: None),
            unregister_poll_fd=libslirp.PollFdFn(lambda _fd, _opaque: None),
            notify=libslirp.NotifyFn(lambda _opaque: None),
            init_completed=libslirp.InitCompletedFn(0),
            timer_new_opaque=libslirp.TimerNewOpaqueFn(self._timer_new),
        )
        self._add_poll = libslirp.AddPollFn(self._add_poll_fd)
        self._get_revents = libslirp.GetREventsFn(self._revents_of)
        self.slirp = self.lib.slirp_new(ctypes.byref(self.cfg), ctypes.byref(self.cb), None)
        if not self.slirp:
            raise UserNetError("libslirp refused the network configuration")
        try:
            for fwd in forwards:
                self.listen(fwd)
        except UserNetError:
            self.close()
            raise

    # --- set-up and tear-down ------------------------------------------------------------------
    def listen(self, fwd: Forward) -> None:
        try:
            if not ipaddress.IPv4Address(fwd.host_addr).is_loopback:
                raise UserNetError(f"hostfwd {fwd.host_addr}:{fwd.host_port}: not a loopback address")
        except ValueError:
            raise UserNetError(f"hostfwd {fwd.host_addr!r}: not an IPv4 address") from None
        ctypes.set_errno(0)
        rc = self.lib.slirp_add_hostfwd(self.slirp, 0, in_addr(ip_bytes(fwd.host_addr)), fwd.host_port,
                                        in_addr(self.guest_ip), fwd.guest_port)
        if rc < 0:
            err = ctypes.get_errno()
            reason = os.strerror(err) if err else "cannot listen"
            raise UserNetError(f"hostfwd {fwd.host_addr}:{fwd.host_port}: {reason}")
        self._widen_backlog(fwd)

    @staticmethod
    def _widen_backlog(fwd: Forward) -> None:
        """libslirp listens for a forwarded port with a backlog of 1 (tcp_listen), so a burst
        of clients finds the accept queue full and waits out SYN retransmissions (1 s, 2 s,
        ...) until the VMM's next poll accepts. Listening again on the same socket only
        resizes its queue (listen(2) on a listening socket), so the socket libslirp made for
        this forward (found by its address among this process's descriptors) gets
        SOMAXCONN. It stays libslirp's: the duplicate used here is closed at once."""
        for name in os.listdir("/proc/self/fd"):
            try:
                fd = int(name)
                if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                    continue
                dup = socket.socket(fileno=os.dup(fd))
            except (ValueError, OSError):
                continue
            with dup:
                try:
                    if (dup.family == socket.AF_INET and dup.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                            and dup.getsockname() == (fwd.host_addr, fwd.host_port)):
                        dup.listen(socket.SOMAXCONN)
                        return
                except OSError:
                    continue

    def close(self) -> None:
        if self.slirp:
            self.lib.slirp_cleanup(self.slirp)
            self.slirp = None
        self.timers.clear()
        for fd in list(self._registered):
            self._poller.unregister(fd)
        self._registered.clear()

    # --- libslirp's callbacks (exceptions must not cross into C) --------------------------------
    def _send_packet(self, buf: int, length: int, _opaque: object) -> int:
        try:
            self.frames_out += 1
            self.output(ctypes.string_at(buf, length))
        except Exception as exc:
            log.warning("usernet: frame to the guest lost: %s: %s", type(exc).__name__, exc)
        return length

    def _guest_error(self, msg: bytes, _opaque: object) -> None:
        self.guest_errors += 1
        log.info("usernet: guest error: %s", (msg or b"").decode(errors="replace"))

    def _timer_new(self, timer_id: int, cb_opaque: int | None, _opaque: object) -> int:
        handle = self._next_timer
        self._next_timer += 1
        self.timers[handle] = [timer_id, cb_opaque, None]
        return handle

    def _timer_free(self, handle: int | None, _opaque: object) -> None:
        self.timers.pop(handle or 0, None)

    def _timer_mod(self, handle: int | None, expire_ms: int, _opaque: object) -> None:
        timer = self.timers.get(handle or 0)
        if timer is not None:
            timer[2] = expire_ms
            self._dirty = True  # perhaps sooner than the next round was planned

    def _add_poll_fd(self, fd: int, events: int, _opaque: object) -> int:
        mask = 0
        for slirp_bit, poll_bit in _TO_POLL:
            if events & slirp_bit:
                mask |= poll_bit
        self._fds.append((fd, mask))
        return len(self._fds) - 1

    def _revents_of(self, idx: int, _opaque: object) -> int:
        if not 0 <= idx < len(self._fds):
            return 0
        fd, wanted = self._fds[idx]
        got = self._revents.get(fd, 0)
        out = 0
        for poll_bit, slirp_bit in _FROM_POLL:
            if got & poll_bit and (poll_bit & wanted or poll_bit in (select.POLLERR, select.POLLHUP,
                                                                     select.POLLNVAL)):
                out |= slirp_bit
        return out

    # --- the event loop ----------------------------------------------------------------------
    def poll(self, timeout: float = 0.0) -> None:
        """Serve ready host sockets (waiting at most `timeout` seconds, less if a TCP timer
        of libslirp's is due) and expired timers.

        libslirp's state changes only inside its own calls, so the poll set it filled last
        stays right until the next one: while no frame came in since and its next timer is
        not due, a poll waits on that set alone and calls into libslirp only when a socket
        is ready (poll(2) is level-triggered: the full round sees the same events)."""
        if not self.slirp:
            return
        ms = int(timeout * 1000)
        now_ms = time.monotonic_ns() // 1_000_000
        if not self._dirty and now_ms < self._due_ms:
            ready = self._poller.poll(min(ms, self._due_ms - now_ms)) if self._registered or ms else []
            if not ready and time.monotonic_ns() // 1_000_000 < self._due_ms:
                return
            ms = 0  # a socket is ready or a timer due: the full round, without waiting again
        self._fds.clear()
        wait = ctypes.c_uint32(SLIRP_HORIZON_MS)  # libslirp lowers it to its next timer
        self.lib.slirp_pollfds_fill(self.slirp, ctypes.byref(wait), self._add_poll, None)
        due = now_ms + wait.value
        for _tid, _cb, expiry in self.timers.values():
            if expiry is not None:
                due = min(due, expiry)
        ms = max(0, min(ms, due - now_ms))
        wanted: dict[int, int] = {}
        for fd, mask in self._fds:
            wanted[fd] = wanted.get(fd, 0) | mask
        for fd in [fd for fd in self._registered if fd not in wanted]:
            self._poller.unregister(fd)
            del self._registered[fd]
        for fd, mask in wanted.items():
            if self._registered.get(fd) != mask:
                self._poller.register(fd, mask)
                self._registered[fd] = mask
        self._revents = dict(self._poller.poll(ms)) if wanted or ms else {}
        self._dirty = False
        self.lib.slirp_pollfds_poll(self.slirp, 0, self._get_revents, None)
        self._run_timers()
        self._due_ms = due

    def watched(self) -> dict[int, int]:
        """The host sockets libslirp asked to be watched at its last poll (fd -> poll mask)."""
        return dict(self._registered)

    def next_deadline(self) -> float | None:
        """When the next poll is due without any socket event (time.monotonic() seconds):
        now if libslirp was called since its poll set was filled, else its next timer."""
        if not self.slirp:
            return None
        if self._dirty:
            return time.monotonic()
        return self._due_ms / 1000

    def _run_timers(self) -> None:
        now_ms = time.monotonic_ns() // 1_000_000
        for timer in list(self.timers.values()):
            if timer[2] is not None and timer[2] <= now_ms:
                timer[2] = None
                self.lib.slirp_handle_timer(self.slirp, timer[0], timer[1])

    # --- frames from the guest ---------------------------------------------------------------
    def input(self, frame: bytes) -> None:
        """One frame the guest transmitted; libslirp checks and drops what it cannot use."""
        self.frames_in += 1
        if self.slirp:
            self._dirty = True
            self.lib.slirp_input(self.slirp, frame, len(frame))

    def connections(self) -> list[str]:
        """libslirp's table of sockets (one line each, header left out)."""
        if not self.slirp:
            return []
        ptr = self.lib.slirp_connection_info(self.slirp)
        if not ptr:
            return []
        try:
            text = ctypes.string_at(ptr).decode(errors="replace")
        finally:
            _free(ptr)
        return [line for line in text.splitlines()[1:] if line.strip()]


_libc = ctypes.CDLL(None)
_libc.free.argtypes = [ctypes.c_void_p]
_libc.free.restype = None


def _free(ptr: int) -> None:
    _libc.free(ptr)
