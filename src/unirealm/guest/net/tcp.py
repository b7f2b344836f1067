"""TCP (RFC 9293) for the unikernel: one `Tcb` per connection, `Listener` for passive opens.

What it does: passive open with a backlog (SYN -> SYN-ACK, the final ACK queues the
connection for accept), active open, data both ways within the peer's advertised window
(RFC 7323 window scale honoured when both sides offer it; this side offers scale 0), MSS
from the peer's SYN, retransmission on timeout (RFC 6298 RTO from measured RTTs, Karn's
rule, exponential backoff, the connection aborted after MAX_RETRIES), zero-window probes,
FIN handshakes in every order (FIN_WAIT_1/2, CLOSING, CLOSE_WAIT, LAST_ACK), RST both ways,
new data after close() answered with a RST (RFC 1122 §4.2.2.13),
a short TIME_WAIT, delayed ACKs (every second segment, else within DELACK_NS). Out-of-order
segments are not queued: they are dropped and answered with a duplicate ACK; the peer
retransmits. Against blind attacks (RFC 5961): a RST resets only exactly at rcv_nxt, a SYN
on a synchronized connection gets a challenge ACK, and an ACK outside [SND.UNA - MAX.SND.WND,
SND.NXT] is discarded with its segment.
"""

from __future__ import annotations

import errno
from collections import deque
from typing import Any

from ...arch.net import TCP_DEFAULT_MSS, Tcp, TcpFlags, TcpOptions, seq_le, seq_lt

# the control bits as plain ints: IntFlag arithmetic costs a Python call per operation
F_FIN, F_SYN, F_RST, F_PSH, F_ACK = (int(TcpFlags[name]) for name in ("FIN", "SYN", "RST", "PSH", "ACK"))

CLOSED, LISTEN, SYN_SENT, SYN_RCVD, ESTABLISHED = "CLOSED", "LISTEN", "SYN_SENT", "SYN_RCVD", "ESTABLISHED"
FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT, CLOSING, LAST_ACK, TIME_WAIT = (
    "FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT")
SYNCHRONIZED = (ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT, CLOSING, LAST_ACK, TIME_WAIT)
RECEIVING = (ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2)
SENDING = (ESTABLISHED, CLOSE_WAIT)

MS = 1_000_000
RTO_INITIAL = 1000 * MS  # RFC 6298 §2.1
RTO_MIN = 200 * MS  # Linux's TCP_RTO_MIN
RTO_MAX = 8000 * MS
MAX_RETRIES = 8
TIME_WAIT_NS = 1000 * MS  # short: one second, not 2*MSL
FIN_WAIT_2_NS = 10_000 * MS  # an orphaned FIN_WAIT_2 does not wait for ever
DELACK_NS = 40 * MS  # RFC 9293 §3.8.6.3: an ACK may wait (< 0.5 s) for data to ride on; Linux's 40 ms
RCVBUF = 65535
SNDBUF = 256 << 10  # four 64 KiB windows: the app refills it while a window is in flight
LOCAL_MSS = 1460  # Ethernet MTU 1500 - 20 (IPv4) - 20 (TCP)
M32 = 0xFFFF_FFFF


class Listener:
    def __init__(self, stack: Any, port: int, backlog: int) -> None:
        self.stack = stack
        self.port = port
        self.backlog = max(1, min(backlog, 128))
        self.pending: set[Tcb] = set()  # SYN_RCVD children
        self.ready: deque[Tcb] = deque()  # established, waiting for accept()
        self.closed = False

    def full(self) -> bool:
        return len(self.pending) + len(self.ready) >= self.backlog

    def close(self) -> None:
        self.closed = True
        for tcb in [*self.pending, *self.ready]:
            tcb.abort(send_rst=True)
        self.pending.clear()
        self.ready.clear()


class Tcb:
    def __init__(self, stack: Any, lport: int, rip: bytes, rport: int) -> None:
        self.stack = stack
        self.lport, self.rip, self.rport = lport, rip, rport
        self.state = CLOSED
        self.iss = stack.rand32()
        self.snd_una = self.snd_nxt = self.iss
        self.snd_wnd = 0
        self.max_snd_wnd = 0  # the largest window the peer offered (RFC 5961 §5.2 MAX.SND.WND)
        self.snd_wl1 = self.snd_wl2 = 0
        self.irs = self.rcv_nxt = 0
        self.peer_mss = TCP_DEFAULT_MSS
        self.peer_wscale = 0
        self.sndbuf = bytearray()  # from snd_una: sent-unacknowledged, then unsent
        self.rcvbuf = bytearray()
        self.fin_queued = False  # the app closed or shut down writing
        self.fin_sent = False
        self.fin_seq = 0
        self.peer_fin = False
        self.error = 0  # errno for the app: ECONNRESET, ECONNREFUSED, ETIMEDOUT
        self.listener: Listener | None = None
        self.orphan = False  # closed by the app; lives on until the FIN handshake ends
        self.ack_pending = False  # an ACK is owed now
        self.ack_delayed = False  # in-order data is unacknowledged: an ACK is owed by `delack`
        self.segs_unacked = 0
        self.delack: int | None = None
        self.last_wnd = RCVBUF
        self.rto = RTO_INITIAL
        self.srtt = 0
        self.rttvar = 0
        self.rtt_probe: tuple[int, int] | None = None  # (seq, time) of one timed segment
        self.rtx_high = self.iss  # Karn: bytes before it were retransmitted, never timed
        self.rtx_deadline: int | None = None
        self.retries = 0
        self.deadline: int | None = None  # TIME_WAIT / FIN_WAIT_2 end
        self.retransmits = 0

    # --- sizes ----------------------------------------------------------------------------
    @property
    def key(self) -> tuple[int, bytes, int]:
        return (self.lport, self.rip, self.rport)

    @property
    def mss(self) -> int:
        return max(64, min(self.peer_mss, LOCAL_MSS))

    def rcv_wnd(self) -> int:
        return max(0, RCVBUF - len(self.rcvbuf))

    def send_room(self) -> int:
        """Free space in the send buffer: what the next `send` takes at most."""
        return max(0, SNDBUF - len(self.sndbuf))

    def unsent_offset(self) -> int:
        """Bytes of sndbuf already sent (snd_nxt - snd_una, less a sent FIN)."""
        return min((self.snd_nxt - self.snd_una) & M32, len(self.sndbuf))

    # --- segments out ---------------------------------------------------------------------
    def segment(self, flags: int, seq: int | None = None, data: bytes = b"", options: TcpOptions | None = None
                ) -> None:
        wnd = self.rcv_wnd()
        self.last_wnd = wnd
        tcp = Tcp(self.lport, self.rport, self.snd_nxt if seq is None else seq,
                  self.rcv_nxt if flags & F_ACK else 0, flags, min(wnd, 0xFFFF),
                  options or TcpOptions())
        if flags & F_ACK:
            self.ack_pending = self.ack_delayed = False
            self.segs_unacked = 0
            self.delack = None
        self.stack.send_tcp(self.rip, tcp, data)

    def syn_options(self, wscale: bool) -> TcpOptions:
        return TcpOptions(mss=LOCAL_MSS, wscale=0 if wscale else None)

    def send_syn(self) -> None:
        self.segment(F_SYN, self.iss, options=self.syn_options(True))

    def send_synack(self) -> None:
        self.segment(F_SYN | F_ACK, self.iss, options=self.syn_options(self.wscale_ok))

    def arm(self, now: int) -> None:
        if self.rtx_deadline is None:
            self.rtx_deadline = now + self.rto

    def output(self) -> None:
        """Send what the window allows, the FIN when due, else a pending ACK (the NIC is
        told of the burst once)."""
        with self.stack.tx_batch():
            self._output()

    def _output(self) -> None:
        now = self.stack.now_ns()
        sent = False
        if self.state in (ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING, LAST_ACK) and not self.fin_sent:
            while True:
                off = self.unsent_offset()
                avail = len(self.sndbuf) - off
                room = (self.snd_una + self.snd_wnd - self.snd_nxt) & M32
                if room > 0x7FFF_FFFF:
                    room = 0
                n = min(avail, self.mss, room)
                if n <= 0:
                    break
                flags = F_ACK | (F_PSH if n == avail else 0)
                self.segment(flags, data=bytes(self.sndbuf[off : off + n]))
                if self.rtt_probe is None and not seq_lt(self.snd_nxt, self.rtx_high):
                    self.rtt_probe = (self.snd_nxt, now)
                    self.rtx_high = self.snd_nxt
                self.snd_nxt = (self.snd_nxt + n) & M32
                self.arm(now)
                sent = True
            if self.fin_queued and self.unsent_offset() == len(self.sndbuf):
                self.fin_seq = self.snd_nxt
                self.segment(F_FIN | F_ACK)
                self.snd_nxt = (self.snd_nxt + 1) & M32
                self.fin_sent = True
                if self.state == ESTABLISHED:
                    self.state = FIN_WAIT_1
                elif self.state == CLOSE_WAIT:
                    self.state = LAST_ACK
                self.arm(now)
                sent = True
            if (self.snd_wnd == 0 and len(self.sndbuf) > self.unsent_offset()
                    and self.snd_nxt == self.snd_una):
                self.arm(now)  # zero window: the timer probes it
        if not sent and self.state in SYNCHRONIZED:
            # Delayed ACK (RFC 9293 §3.8.6.3, RFC 1122 §4.2.3.2): in-order data is ACKed at once
            # only every second segment; else the ACK waits up to DELACK_NS for the app's
            # answer to carry it. Everything else (FIN, duplicates, out of order) is ACKed now.
            if self.ack_pending or (self.ack_delayed and self.segs_unacked >= 2):
                self.segment(F_ACK)
            elif self.ack_delayed and self.delack is None:
                self.delack = now + DELACK_NS

    def window_update(self) -> None:
        """After the app reads: tell the peer when the window opened by a useful amount."""
        if self.state in RECEIVING and self.rcv_wnd() - self.last_wnd >= min(RCVBUF // 2, 2 * self.mss):
            self.segment(F_ACK)

    # --- timers ---------------------------------------------------------------------------
    def timers(self, now: int) -> None:
        if self.deadline is not None and now >= self.deadline:
            self.release()
            return
        if self.delack is not None and now >= self.delack:
            self.delack = None
            if self.ack_delayed and self.state in SYNCHRONIZED:
                self.segment(F_ACK)
        if self.rtx_deadline is None or now < self.rtx_deadline:
            return
        self.rtx_deadline = None
        if self.state == SYN_SENT:
            if self.retry(now):
                self.send_syn()
        elif self.state == SYN_RCVD:
            if self.retry(now):
                self.send_synack()
        elif self.snd_nxt != self.snd_una:
            if self.retry(now):
                # Go back to the oldest unacknowledged byte (a sent FIN is sent again too).
                self.retransmits += 1
                self.rtt_probe = None
                self.rtx_high = self.snd_nxt
                self.snd_nxt = self.snd_una
                self.fin_sent = False
                self.output()
        elif self.snd_wnd == 0 and len(self.sndbuf) > self.unsent_offset():
            # Zero-window probe: one byte past the window (RFC 9293 §3.8.6.1).
            off = self.unsent_offset()
            self.segment(F_ACK, data=bytes(self.sndbuf[off : off + 1]))
            self.snd_nxt = (self.snd_nxt + 1) & M32
            self.rto = min(self.rto * 2, RTO_MAX)
            self.arm(now)

    def retry(self, now: int) -> bool:
        self.retries += 1
        if self.retries > MAX_RETRIES:
            self.error = errno.ETIMEDOUT
            self.abort(send_rst=True)
            return False
        self.rto = min(self.rto * 2, RTO_MAX)
        self.arm(now)
        return True

    def rtt_sample(self, ack: int, now: int) -> None:
        if self.rtt_probe is None or not seq_lt(self.rtt_probe[0], ack):
            return
        r = now - self.rtt_probe[1]
        self.rtt_probe = None
        if self.srtt == 0:
            self.srtt, self.rttvar = r, r // 2
        else:
            self.rttvar = (3 * self.rttvar + abs(self.srtt - r)) // 4
            self.srtt = (7 * self.srtt + r) // 8
        self.rto = max(RTO_MIN, min(RTO_MAX, self.srtt + max(MS, 4 * self.rttvar)))

    # --- segments in ----------------------------------------------------------------------
    def input(self, seg: Tcp, data: bytes) -> None:
        f = seg.flags
        if self.state == SYN_SENT:
            self.input_syn_sent(seg)
            return
        if self.state == CLOSED:
            return
        seq = seg.seq
        # Acceptability (RFC 9293 §3.10.7.4 with RFC 5961 §3.2): a RST resets only exactly in
        # sequence; elsewhere in the window it gets a challenge ACK, outside it is dropped
        # (a blind attacker must guess rcv_nxt, not just land in the window). Data is trimmed
        # to rcv_nxt; a segment from the future is dropped.
        if f & F_RST:
            wnd = max(self.rcv_wnd(), 1)
            if seq != self.rcv_nxt:
                if seq_le(self.rcv_nxt, seq) and seq_lt(seq, self.rcv_nxt + wnd):
                    self.segment(F_ACK)
                return
            if not (self.state == SYN_RCVD and self.listener is not None):
                self.error = errno.EPIPE if self.state == CLOSE_WAIT else errno.ECONNRESET  # tcp_reset
            self.release()
            return
        if f & F_SYN:
            if self.state == SYN_RCVD and seq == self.irs:
                self.send_synack()  # our SYN-ACK was lost
            else:
                self.segment(F_ACK)  # RFC 5961 challenge ACK
            return
        if not f & F_ACK:
            return
        fin = bool(f & F_FIN)
        if seq != self.rcv_nxt:
            if seq_lt(seq, self.rcv_nxt):
                trim = (self.rcv_nxt - seq) & M32
                if trim > len(data):
                    data, fin = b"", False  # all old (a FIN too): acknowledge again
                    self.ack_pending = True
                else:
                    data = data[trim:]
                    if not data and not fin:
                        self.ack_pending = True
            else:
                data, fin = b"", False
                self.ack_pending = True  # out of order: a duplicate ACK asks for the gap
        now = self.stack.now_ns()
        ack = seg.ack
        if self.state == SYN_RCVD:
            if ack != (self.iss + 1) & M32:
                self.stack.send_rst_for(self.rip, seg, len(data))
                return
            self.state = ESTABLISHED
            self.snd_una = ack
            self.snd_wnd = seg.window << self.peer_wscale
            self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
            self.snd_wl1, self.snd_wl2 = seq, ack
            self.rtx_deadline = None
            self.retries = 0
            if self.listener is not None:
                self.listener.pending.discard(self)
                if self.listener.closed:
                    self.abort(send_rst=True)
                    return
                self.listener.ready.append(self)
        elif seq_lt(self.snd_una, ack) and seq_le(ack, self.snd_nxt):
            acked = (ack - self.snd_una) & M32
            self.rtt_sample(ack, now)
            del self.sndbuf[: min(acked, len(self.sndbuf))]
            self.snd_una = ack
            self.retries = 0
            self.rtx_deadline = None
            if self.snd_nxt != self.snd_una:
                self.arm(now)
        elif seq_lt(self.snd_nxt, ack) or seq_lt(ack, (self.snd_una - self.max_snd_wnd) & M32):
            # RFC 5961 §5.2: an ACK of something never sent, or older than any window the peer
            # offered, is discarded (its data too) and answered with an ACK
            self.ack_pending = True
            self.stack.flush_later(self)
            return
        if seq_lt(self.snd_wl1, seq) or (self.snd_wl1 == seq and seq_le(self.snd_wl2, ack)):
            self.snd_wnd = seg.window << self.peer_wscale
            self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
            self.snd_wl1, self.snd_wl2 = seq, ack
        fin_acked = self.fin_sent and seq_lt(self.fin_seq, self.snd_una)
        if fin_acked:
            if self.state == FIN_WAIT_1:
                self.state = FIN_WAIT_2
                if self.orphan:
                    self.deadline = now + FIN_WAIT_2_NS
            elif self.state == CLOSING:
                self.enter_time_wait(now)
            elif self.state == LAST_ACK:
                self.release()
                return
        if data and self.state in RECEIVING:
            if self.orphan:
                # RFC 1122 §4.2.2.13 (Linux's TCPAbortOnData): new data after CLOSE is lost
                self.abort(send_rst=True)
                return
            room = self.rcv_wnd()
            if len(data) > room:
                data, fin = data[:room], False
            self.rcvbuf += data
            self.rcv_nxt = (self.rcv_nxt + len(data)) & M32
            self.ack_delayed = True
            self.segs_unacked += 1
        if fin and self.state in RECEIVING:
            self.rcv_nxt = (self.rcv_nxt + 1) & M32
            self.peer_fin = True
            self.ack_pending = True
            if self.state == ESTABLISHED:
                self.state = CLOSE_WAIT
            elif self.state == FIN_WAIT_1:
                self.state = CLOSING if not fin_acked else TIME_WAIT
                if self.state == TIME_WAIT:
                    self.enter_time_wait(now)
            elif self.state == FIN_WAIT_2:
                self.enter_time_wait(now)
        elif f & F_FIN and self.state == TIME_WAIT:
            # RFC 9293 §3.10.7.4: the peer's FIN again (our last ACK was lost): ACK it and
            # restart the TIME-WAIT timeout
            self.ack_pending = True
            self.deadline = now + TIME_WAIT_NS
        self.stack.flush_later(self)

    def input_syn_sent(self, seg: Tcp) -> None:
        f = seg.flags
        if f & F_ACK and seg.ack != (self.iss + 1) & M32:
            if not f & F_RST:
                self.stack.send_rst_for(self.rip, seg, 0)
            return
        if f & F_RST:
            if f & F_ACK:
                self.error = errno.ECONNREFUSED
                self.release()
            return
        if not f & F_SYN or not f & F_ACK:
            return  # simultaneous open is not supported
        self.take_syn_options(seg, True)
        self.irs = seg.seq
        self.rcv_nxt = (seg.seq + 1) & M32
        self.snd_una = seg.ack
        self.snd_wnd = self.max_snd_wnd = seg.window  # never scaled in a SYN
        self.snd_wl1, self.snd_wl2 = seg.seq, seg.ack
        self.state = ESTABLISHED
        self.rtx_deadline = None
        self.retries = 0
        self.segment(F_ACK)
        self.output()

    def take_syn_options(self, seg: Tcp, we_offered_wscale: bool) -> None:
        o = seg.options
        if o.mss:
            self.peer_mss = o.mss
        self.wscale_ok = o.wscale is not None and we_offered_wscale
        self.peer_wscale = o.wscale if self.wscale_ok and o.wscale is not None else 0

    wscale_ok = False

    def enter_time_wait(self, now: int) -> None:
        self.state = TIME_WAIT
        self.rtx_deadline = None
        self.deadline = now + TIME_WAIT_NS

    # --- the app's side -------------------------------------------------------------------
    def connect(self) -> None:
        self.state = SYN_SENT
        self.send_syn()
        self.snd_nxt = (self.iss + 1) & M32
        self.arm(self.stack.now_ns())

    def recv(self, size: int, peek: bool = False) -> bytes | None:
        """Up to `size` bytes; b"" at end of stream; None when the app must wait."""
        if self.rcvbuf:
            out = bytes(self.rcvbuf[:size])
            if not peek:
                del self.rcvbuf[:size]
                self.window_update()
            return out
        if self.error:
            raise OSError(self.take_error(), "")
        if self.peer_fin or self.state in (CLOSED, TIME_WAIT, CLOSING, LAST_ACK):
            return b""
        return None

    def send(self, data: bytes) -> int | None:
        """Bytes queued; None when the buffer is full and the app must wait."""
        if self.error:
            raise OSError(self.take_error(), "")
        if self.fin_queued or self.state not in (ESTABLISHED, CLOSE_WAIT):
            if self.state in (SYN_SENT, SYN_RCVD):
                return None
            raise OSError(errno.EPIPE, "")
        room = SNDBUF - len(self.sndbuf)
        if room <= 0:
            return None
        take = data[:room]
        self.sndbuf += take
        self.output()
        return len(take)

    def shutdown_write(self) -> None:
        if not self.fin_queued and self.state in (ESTABLISHED, CLOSE_WAIT, SYN_RCVD):
            self.fin_queued = True
            self.output()
        elif self.state == SYN_SENT:
            self.release()

    def close(self) -> None:
        """The app's last reference is gone."""
        self.orphan = True
        if self.state in (SYN_SENT, CLOSED):
            self.release()
        elif self.rcvbuf and self.state in (*RECEIVING, CLOSE_WAIT):
            self.abort(send_rst=True)  # unread data: reset (RFC 1122 §4.2.2.13), as Linux does
        elif self.state in (ESTABLISHED, CLOSE_WAIT, SYN_RCVD):
            self.fin_queued = True
            self.output()
        elif self.state == FIN_WAIT_2 and self.deadline is None:
            self.deadline = self.stack.now_ns() + FIN_WAIT_2_NS  # shut down for writing before

    def take_error(self) -> int:
        """The error, reported once (sock_error): the next call finds the connection closed."""
        err, self.error = self.error, 0
        return err

    def disconnect(self) -> bool:
        """tcp_disconnect (connect(AF_UNSPEC), close with a zero linger): a RST where
        tcp_need_reset says so, then CLOSED with the queues dropped; whether the app is to
        see ECONNRESET (a RST sent, or a handshake abandoned)."""
        reset = self.state in (ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, FIN_WAIT_2, SYN_RCVD)
        if reset:
            self.segment(F_RST | F_ACK)
        abandoned = reset or self.state == SYN_SENT
        self.sndbuf.clear()
        self.rcvbuf.clear()
        self.release()
        return abandoned

    def abort(self, send_rst: bool) -> None:
        if send_rst and self.state in (*SYNCHRONIZED, SYN_RCVD) and self.state != TIME_WAIT:
            self.segment(F_RST | F_ACK)
        if not self.error:
            self.error = errno.ECONNRESET
        self.release()

    def release(self) -> None:
        self.state = CLOSED
        self.rtx_deadline = self.deadline = None
        if self.listener is not None:
            self.listener.pending.discard(self)
        self.stack.forget(self)

    # --- readiness ------------------------------------------------------------------------
    @property
    def readable(self) -> bool:
        return bool(self.rcvbuf) or self.peer_fin or bool(self.error) or self.state == CLOSED

    @property
    def writable(self) -> bool:
        # Linux's sk_stream_is_writeable: free space of at least half what is queued, so that
        # an app woken for writing has a useful amount of room, not the few bytes one ACK freed
        return self.state in SENDING and not self.fin_queued and 3 * len(self.sndbuf) <= 2 * SNDBUF
