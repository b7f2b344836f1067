"""ctypes declarations for libslirp (Debian `libslirp0`, libslirp.h of release 4.7): the
structures `SlirpConfig` (version 4) and `SlirpCb`, the callback types, and the functions
the user-mode network calls. Nothing here keeps state; `usernet.UserNet` owns one stack.

The layouts follow the C declarations field by field (ctypes applies the platform's C
alignment rules): `struct in_addr` is one network-order `uint32_t`, `struct in6_addr` 16
bytes aligned as its `uint32_t` union member, `bool` one byte.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_bool,
    c_char_p,
    c_int,
    c_int64,
    c_size_t,
    c_ssize_t,
    c_uint8,
    c_uint32,
    c_void_p,
)

SLIRP_CONFIG_VERSION = 4  # the fields below; every libslirp since 4.5 accepts it
SLIRP_POLL_IN, SLIRP_POLL_OUT, SLIRP_POLL_PRI, SLIRP_POLL_ERR, SLIRP_POLL_HUP = 1, 2, 4, 8, 16
SLIRP_TIMER_RA = 0  # SlirpTimerId: the IPv6 router advertisement timer, the only one


class LibslirpMissing(OSError):
    """libslirp cannot be loaded; the message says which package provides it."""


class InAddr(Structure):
    _fields_ = [("s_addr", c_uint32)]  # network byte order


class In6Addr(Structure):
    _fields_ = [("s6_addr32", c_uint32 * 4)]


class SlirpConfig(Structure):
    _fields_ = [
        ("version", c_uint32),
        # version 1
        ("restricted", c_int),
        ("in_enabled", c_bool),
        ("vnetwork", InAddr),
        ("vnetmask", InAddr),
        ("vhost", InAddr),
        ("in6_enabled", c_bool),
        ("vprefix_addr6", In6Addr),
        ("vprefix_len", c_uint8),
        ("vhost6", In6Addr),
        ("vhostname", c_char_p),
        ("tftp_server_name", c_char_p),
        ("tftp_path", c_char_p),
        ("bootfile", c_char_p),
        ("vdhcp_start", InAddr),
        ("vnameserver", InAddr),
        ("vnameserver6", In6Addr),
        ("vdnssearch", POINTER(c_char_p)),
        ("vdomainname", c_char_p),
        ("if_mtu", c_size_t),
        ("if_mru", c_size_t),
        ("disable_host_loopback", c_bool),
        ("enable_emu", c_bool),
        # version 2
        ("outbound_addr", c_void_p),
        ("outbound_addr6", c_void_p),
        # version 3
        ("disable_dns", c_bool),
        # version 4
        ("disable_dhcp", c_bool),
    ]


SendPacketFn = CFUNCTYPE(c_ssize_t, c_void_p, c_size_t, c_void_p)
GuestErrorFn = CFUNCTYPE(None, c_char_p, c_void_p)
ClockGetNsFn = CFUNCTYPE(c_int64, c_void_p)
TimerNewFn = CFUNCTYPE(c_void_p, c_void_p, c_void_p, c_void_p)
TimerFreeFn = CFUNCTYPE(None, c_void_p, c_void_p)
TimerModFn = CFUNCTYPE(None, c_void_p, c_int64, c_void_p)
PollFdFn = CFUNCTYPE(None, c_int, c_void_p)
NotifyFn = CFUNCTYPE(None, c_void_p)
InitCompletedFn = CFUNCTYPE(None, c_void_p, c_void_p)
TimerNewOpaqueFn = CFUNCTYPE(c_void_p, c_int, c_void_p, c_void_p)
AddPollFn = CFUNCTYPE(c_int, c_int, c_int, c_void_p)
GetREventsFn = CFUNCTYPE(c_int, c_int, c_void_p)


class SlirpCb(Structure):
    _fields_ = [
        ("send_packet", SendPacketFn),
        ("guest_error", GuestErrorFn),
        ("clock_get_ns", ClockGetNsFn),
        ("timer_new", TimerNewFn),
        ("timer_free", TimerFreeFn),
        ("timer_mod", TimerModFn),
        ("register_poll_fd", PollFdFn),
        ("unregister_poll_fd", PollFdFn),
        ("notify", NotifyFn),
        # version 4
        ("init_completed", InitCompletedFn),
        ("timer_new_opaque", TimerNewOpaqueFn),
    ]


_lib: ctypes.CDLL | None = None


def load() -> ctypes.CDLL:
    """The library with its prototypes declared (loaded once)."""
    global _lib
    if _lib is not None:
        return _lib
    name = ctypes.util.find_library("slirp") or "libslirp.so.0"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError:
        raise LibslirpMissing("-n mode=user needs libslirp (Debian package libslirp0)") from None
    lib.slirp_new.argtypes = [POINTER(SlirpConfig), POINTER(SlirpCb), c_void_p]
    lib.slirp_new.restype = c_void_p
    lib.slirp_cleanup.argtypes = [c_void_p]
    lib.slirp_cleanup.restype = None
    lib.slirp_input.argtypes = [c_void_p, c_char_p, c_int]
    lib.slirp_input.restype = None
    lib.slirp_pollfds_fill.argtypes = [c_void_p, POINTER(c_uint32), AddPollFn, c_void_p]
    lib.slirp_pollfds_fill.restype = None
    lib.slirp_pollfds_poll.argtypes = [c_void_p, c_int, GetREventsFn, c_void_p]
    lib.slirp_pollfds_poll.restype = None
    lib.slirp_handle_timer.argtypes = [c_void_p, c_int, c_void_p]
    lib.slirp_handle_timer.restype = None
    lib.slirp_add_hostfwd.argtypes = [c_void_p, c_int, InAddr, c_int, InAddr, c_int]
    lib.slirp_add_hostfwd.restype = c_int
    lib.slirp_connection_info.argtypes = [c_void_p]
    lib.slirp_connection_info.restype = c_void_p  # a g_malloc'd string
    lib.slirp_version_string.argtypes = []
    lib.slirp_version_string.restype = c_char_p
    _lib = lib
    return lib


def in_addr(raw: bytes) -> InAddr:
    """A 4-byte address as `struct in_addr` (s_addr keeps the network byte order)."""
    return InAddr(int.from_bytes(raw, sys.byteorder))
