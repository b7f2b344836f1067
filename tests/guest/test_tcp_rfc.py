"""TCP against the RFCs, through the scripted peer of test_tcpip: RFC 6298 RTO arithmetic and
Karn's rule, RFC 9293 SYN-SENT handling of RST and bad ACKs, the closing states (CLOSING,
FIN-WAIT-1 straight to TIME-WAIT, TIME-WAIT re-acknowledging a retransmitted FIN, a new SYN
ending TIME-WAIT), RFC 1122 §4.2.2.13 (data after CLOSE is answered with a reset), retries
exhausted, and the option the SYN carries."""

from __future__ import annotations

import errno

import pytest

from unirealm.arch import net
from unirealm.guest.net import tcp as tcpmod

from .test_tcpip import HOST, Peer

F = net.TcpFlags
MS = 1_000_000


@pytest.fixture
def peer() -> Peer:
    return Peer()


def established(peer: Peer, window: int = 65535) -> tuple[tcpmod.Tcb, int, int]:
    listener = peer.stack.listen(8123, 4)
    seq, gseq = peer.handshake(8123, window=window)
    return listener.ready.popleft(), seq, gseq


def rto_after_samples(samples_ms: list[int]) -> int:
    """RFC 6298 §2, written from the RFC: the RTO after these round-trip samples (ns)."""
    srtt = rttvar = 0.0
    for i, r in enumerate(samples_ms):
        r_ns = r * MS
        if i == 0:
            srtt, rttvar = r_ns, r_ns / 2
        else:
            rttvar = (1 - 1 / 4) * rttvar + 1 / 4 * abs(srtt - r_ns)
            srtt = (1 - 1 / 8) * srtt + 1 / 8 * r_ns
    return int(max(tcpmod.RTO_MIN, min(tcpmod.RTO_MAX, srtt + max(MS, 4 * rttvar))))


def test_rto_follows_rfc6298_from_measured_round_trips(peer: Peer) -> None:
    tcb, seq, gseq = established(peer)
    samples = [100, 300, 60]
    for n, rtt in enumerate(samples, 1):
        assert tcb.send(b"q") == 1
        peer.take()
        peer.now += rtt * MS
        assert peer.tcp(40000, 8123, seq, gseq + n, net.TcpFlags.ACK) == []
        assert abs(tcb.rto - rto_after_samples(samples[:n])) <= 2  # integer division
        assert isinstance(tcb.rto, int) and isinstance(tcb.srtt, int)
    # the timer of the next segment is that RTO
    assert tcb.send(b"r") == 1
    peer.take()
    rto = tcb.rto
    assert peer.advance(rto - 1) == []
    (again,) = peer.advance(1)
    assert again.payload == b"r"


def test_karn_no_sample_from_a_retransmitted_segment(peer: Peer) -> None:
    """RFC 6298 §3 (Karn): an ACK for a retransmitted segment gives no RTT sample, and the
    backed-off RTO stays for the next segment (§5.7)."""
    tcb, seq, gseq = established(peer)
    tcb.send(b"a")
    peer.take()
    (rtx,) = peer.advance(tcpmod.RTO_INITIAL)
    assert rtx.payload == b"a"
    peer.now += 10 * MS
    peer.tcp(40000, 8123, seq, gseq + 1, F.ACK)
    assert tcb.rto == 2 * tcpmod.RTO_INITIAL and tcb.srtt == 0
    tcb.send(b"b")
    peer.take()
    assert peer.advance(2 * tcpmod.RTO_INITIAL - 1) == []
    (rtx,) = peer.advance(1)
    assert rtx.payload == b"b"


def test_syn_offers_mss_and_window_scale(peer: Peer) -> None:
    peer.stack.connect(50000, HOST, 80)
    (syn,) = peer.take()
    assert syn.tcp is not None and syn.tcp.options.mss == tcpmod.LOCAL_MSS and syn.tcp.options.wscale == 0
    assert syn.tcp.ack == 0  # no ACK bit: the field is zero


def test_syn_sent_ignores_a_reset_without_ack_and_a_bad_ack_with_rst(peer: Peer) -> None:
    """RFC 9293 §3.10.7.3: in SYN-SENT a RST without an acceptable ACK is dropped, and a
    RST with an unacceptable ACK is dropped without a reset in reply."""
    tcb = peer.stack.connect(50000, HOST, 80)
    (syn,) = peer.take()
    assert syn.tcp is not None
    iss = syn.tcp.seq
    assert peer.tcp(80, 50000, 0, 0, F.RST) == []
    assert tcb.state == tcpmod.SYN_SENT
    assert peer.tcp(80, 50000, 0, iss + 9, F.RST | F.ACK) == []
    assert tcb.state == tcpmod.SYN_SENT and tcb.error == 0
    assert peer.tcp(80, 50000, 5, iss + 1, F.ACK) == []  # no SYN: nothing to synchronize on
    assert tcb.state == tcpmod.SYN_SENT
    (ack,) = peer.tcp(80, 50000, 5, iss + 1, F.SYN | F.ACK, window=1234)
    assert tcb.state == tcpmod.ESTABLISHED and tcb.snd_wnd == 1234 and ack.tcp is not None and ack.tcp.ack == 6


def test_a_new_tcb_is_closed_and_ignores_segments(peer: Peer) -> None:
    tcb = tcpmod.Tcb(peer.stack, 1234, HOST, 80)
    assert tcb.state == tcpmod.CLOSED and tcb.readable and not tcb.writable
    tcb.input(net.Tcp(80, 1234, 1, 1, F.ACK, 100), b"data")
    assert peer.take() == [] and tcb.recv(10) == b""


def test_simultaneous_close_goes_through_closing(peer: Peer) -> None:
    tcb, seq, gseq = established(peer)
    tcb.shutdown_write()
    (fin,) = peer.take()
    assert fin.tcp is not None and fin.tcp.flags & F.FIN and tcb.state == tcpmod.FIN_WAIT_1
    # the peer's FIN crosses ours: it does not acknowledge our FIN
    (ack,) = peer.tcp(40000, 8123, seq, gseq, F.FIN | F.ACK)
    assert ack.tcp is not None and ack.tcp.ack == seq + 1 and tcb.state == tcpmod.CLOSING
    assert tcb.recv(10) == b""
    assert peer.tcp(40000, 8123, seq + 1, gseq + 1, F.ACK) == []
    assert tcb.state == tcpmod.TIME_WAIT


def test_fin_acking_our_fin_goes_straight_to_time_wait(peer: Peer) -> None:
    tcb, seq, gseq = established(peer)
    tcb.shutdown_write()
    peer.take()
    (ack,) = peer.tcp(40000, 8123, seq, gseq + 1, F.FIN | F.ACK)
    assert ack.tcp is not None and ack.tcp.ack == seq + 1 and tcb.state == tcpmod.TIME_WAIT
    # TIME-WAIT: a retransmitted FIN is acknowledged again
    (again,) = peer.tcp(40000, 8123, seq, gseq + 1, F.FIN | F.ACK)
    assert again.tcp is not None and again.tcp.flags == F.ACK and again.tcp.ack == seq + 1
    assert peer.advance(tcpmod.TIME_WAIT_NS - 1) == [] and tcb.state == tcpmod.TIME_WAIT
    peer.advance(1)
    assert tcb.state == tcpmod.CLOSED and not peer.stack.conns


def test_a_retransmitted_fin_restarts_time_wait(peer: Peer) -> None:
    """RFC 9293 §3.10.7.4, TIME-WAIT: a retransmission of the remote FIN is acknowledged
    and the 2 MSL timeout restarted."""
    tcb, seq, gseq = established(peer)
    tcb.shutdown_write()
    peer.take()
    peer.tcp(40000, 8123, seq, gseq + 1, F.FIN | F.ACK)
    peer.take()
    assert peer.advance(tcpmod.TIME_WAIT_NS - 10 * MS) == []
    (again,) = peer.tcp(40000, 8123, seq, gseq + 1, F.FIN | F.ACK)
    assert again.tcp is not None and again.tcp.flags == F.ACK and again.tcp.ack == seq + 1
    assert peer.advance(tcpmod.TIME_WAIT_NS - 1) == [] and tcb.state == tcpmod.TIME_WAIT
    assert peer.tcp(40000, 8123, seq + 1, gseq + 1, F.ACK) == []  # a plain ACK does not restart it
    peer.advance(1)
    assert tcb.state == tcpmod.CLOSED and not peer.stack.conns


def test_a_new_syn_ends_time_wait(peer: Peer) -> None:
    tcb, seq, gseq = established(peer)
    tcb.shutdown_write()
    peer.take()
    peer.tcp(40000, 8123, seq, gseq + 1, F.FIN | F.ACK)
    assert tcb.state == tcpmod.TIME_WAIT
    (synack,) = peer.tcp(40000, 8123, seq + 50_000, 0, F.SYN)
    assert synack.tcp is not None and synack.tcp.flags == F.SYN | F.ACK and synack.tcp.ack == seq + 50_001
    assert tcb.state == tcpmod.CLOSED and peer.stack.conns[(8123, HOST, 40000)] is not tcb


def test_data_after_close_is_answered_with_a_reset(peer: Peer) -> None:
    """RFC 1122 §4.2.2.13: new data received after CLOSE SHOULD get a RST (Linux:
    TCPAbortOnData); a mere retransmission of old data does not."""
    tcb, seq, gseq = established(peer)
    peer.tcp(40000, 8123, seq, gseq, F.ACK, b"read")
    assert tcb.recv(10) == b"read"
    seq += 4
    tcb.close()
    (fin,) = peer.take()
    assert fin.tcp is not None and fin.tcp.flags & F.FIN
    assert peer.tcp(40000, 8123, seq, gseq + 1, F.ACK) == []
    assert tcb.state == tcpmod.FIN_WAIT_2
    (dup,) = peer.tcp(40000, 8123, seq - 4, gseq + 1, F.ACK, b"read")  # old: acknowledged again
    assert dup.tcp is not None and dup.tcp.flags == F.ACK and dup.tcp.ack == seq
    (rst,) = peer.tcp(40000, 8123, seq, gseq + 1, F.ACK, b"more")
    assert rst.tcp is not None and rst.tcp.flags & F.RST and rst.tcp.seq == gseq + 1
    assert tcb.state == tcpmod.CLOSED and not peer.stack.conns


def test_retries_exhausted_abort_with_etimedout(peer: Peer) -> None:
    tcb, _seq, gseq = established(peer)
    tcb.send(b"x")
    peer.take()
    sent = []
    for _ in range(tcpmod.MAX_RETRIES + 1):
        sent += peer.advance(tcpmod.RTO_MAX)
    assert [f.payload for f in sent[:-1]] == [b"x"] * tcpmod.MAX_RETRIES
    last = sent[-1].tcp
    assert last is not None and last.flags & F.RST and last.seq == gseq + 1
    assert tcb.state == tcpmod.CLOSED
    with pytest.raises(OSError) as exc:
        tcb.recv(10)
    assert exc.value.errno == errno.ETIMEDOUT
    assert tcb.recv(10) == b""  # reported once


def test_reset_in_close_wait_is_epipe(peer: Peer) -> None:
    tcb, seq, gseq = established(peer)
    peer.tcp(40000, 8123, seq, gseq, F.FIN | F.ACK)
    assert tcb.state == tcpmod.CLOSE_WAIT
    peer.tcp(40000, 8123, seq + 1, gseq, F.RST)
    assert tcb.state == tcpmod.CLOSED and tcb.error == errno.EPIPE


def test_reset_in_syn_rcvd_returns_silently_to_listen(peer: Peer) -> None:
    """RFC 9293 §3.10.7.4: a RST for a passive open's SYN-RCVD returns to LISTEN."""
    listener = peer.stack.listen(8123, 4)
    (synack,) = peer.tcp(40000, 8123, 1000, 0, F.SYN)
    assert synack.tcp is not None and len(listener.pending) == 1
    (tcb,) = listener.pending
    peer.tcp(40000, 8123, 1001, 0, F.RST)
    assert not listener.pending and tcb.error == 0 and not peer.stack.conns
    peer.handshake(8123)
    assert len(listener.ready) == 1


def test_closing_a_listener_resets_its_queued_connections(peer: Peer) -> None:
    listener = peer.stack.listen(8123, 4)
    peer.handshake(8123, sport=40001)
    peer.tcp(40002, 8123, 1000, 0, F.SYN)
    peer.take()
    peer.stack.unlisten(listener)
    rsts = peer.take()
    assert sorted(f.tcp.dport for f in rsts if f.tcp is not None and f.tcp.flags & F.RST) == [40001, 40002]
    assert not peer.stack.conns and 8123 not in peer.stack.listeners
    (rst,) = peer.tcp(40003, 8123, 1000, 0, F.SYN)
    assert rst.tcp is not None and rst.tcp.flags == F.RST | F.ACK


def test_window_update_after_the_app_reads(peer: Peer) -> None:
    tcb, seq, gseq = established(peer)
    chunk = b"z" * 1460
    for i in range(20):
        peer.tcp(40000, 8123, seq + i * 1460, gseq, F.ACK, chunk)
    peer.advance(tcpmod.DELACK_NS)
    assert tcb.rcv_wnd() == tcpmod.RCVBUF - 20 * 1460
    assert tcb.recv(1000) is not None and peer.take() == []  # too little to announce
    tcb.recv(2 * 1460)
    (upd,) = peer.take()
    assert upd.tcp is not None and upd.tcp.window == tcpmod.RCVBUF - 20 * 1460 + 1000 + 2 * 1460


def test_connect_times_out_without_a_reset(peer: Peer) -> None:
    """An unanswered SYN is sent again MAX_RETRIES times with backoff; then connect fails
    with ETIMEDOUT and nothing more is sent (there is no peer state to reset)."""
    tcb = peer.stack.connect(50000, HOST, 80)
    (syn,) = peer.take()
    assert syn.tcp is not None
    sent = []
    for _ in range(tcpmod.MAX_RETRIES + 1):
        sent += peer.advance(tcpmod.RTO_MAX)
    assert len(sent) == tcpmod.MAX_RETRIES
    assert all(f.tcp is not None and f.tcp.flags == F.SYN and f.tcp.seq == syn.tcp.seq for f in sent)
    assert tcb.state == tcpmod.CLOSED and tcb.error == errno.ETIMEDOUT and not peer.stack.conns


def test_an_orphaned_fin_wait_2_ends_after_its_timeout(peer: Peer) -> None:
    """Linux's tcp_fin_timeout: a closed socket does not wait for the peer's FIN for ever;
    one only shut down for writing does (the app may still read)."""
    tcb, seq, gseq = established(peer)
    tcb.close()
    peer.take()
    peer.tcp(40000, 8123, seq, gseq + 1, F.ACK)
    assert tcb.state == tcpmod.FIN_WAIT_2
    assert peer.advance(tcpmod.FIN_WAIT_2_NS - 1) == [] and tcb.state == tcpmod.FIN_WAIT_2
    peer.advance(1)
    assert tcb.state == tcpmod.CLOSED and not peer.stack.conns
    half = peer.stack.listen(8124, 4)
    seq, gseq = peer.handshake(8124, sport=40001)
    open_tcb = half.ready.popleft()
    open_tcb.shutdown_write()
    peer.take()
    peer.tcp(40001, 8124, seq, gseq + 1, F.ACK)
    peer.advance(10 * tcpmod.FIN_WAIT_2_NS)
    assert open_tcb.state == tcpmod.FIN_WAIT_2
    peer.tcp(40001, 8124, seq, gseq + 1, F.ACK, b"late")
    assert open_tcb.recv(10) == b"late"


def test_close_after_shutdown_in_fin_wait_2_starts_the_timeout(peer: Peer) -> None:
    tcb, seq, gseq = established(peer)
    tcb.shutdown_write()
    peer.take()
    peer.tcp(40000, 8123, seq, gseq + 1, F.ACK)
    peer.advance(5 * tcpmod.FIN_WAIT_2_NS)
    assert tcb.state == tcpmod.FIN_WAIT_2
    tcb.close()
    assert peer.advance(tcpmod.FIN_WAIT_2_NS - 1) == [] and tcb.state == tcpmod.FIN_WAIT_2
    peer.advance(1)
    assert tcb.state == tcpmod.CLOSED and not peer.stack.conns


@pytest.mark.parametrize("half_closed", [False, True])
def test_close_with_unread_data_resets(peer: Peer, half_closed: bool) -> None:
    """RFC 1122 §4.2.2.13: CLOSE while received data is pending SHOULD send a RST."""
    tcb, seq, gseq = established(peer)
    if half_closed:
        tcb.shutdown_write()
        peer.take()
        peer.tcp(40000, 8123, seq, gseq + 1, F.ACK)
        gseq += 1
        assert tcb.state == tcpmod.FIN_WAIT_2
    peer.tcp(40000, 8123, seq, gseq, F.ACK, b"unread")
    peer.take()
    tcb.close()
    (rst,) = peer.take()
    assert rst.tcp is not None and rst.tcp.flags & F.RST and not rst.tcp.flags & F.FIN
    assert rst.tcp.seq == gseq and tcb.state == tcpmod.CLOSED


def test_listen_backlog_zero_still_takes_one(peer: Peer) -> None:
    """listen(2): a backlog of 0 still admits one connection (Linux)."""
    listener = peer.stack.listen(8123, 0)
    peer.handshake(8123, sport=40001)
    assert peer.tcp(40002, 8123, 1000, 0, F.SYN) == []
    assert len(listener.ready) == 1


def test_a_duplicate_syn_in_syn_rcvd_repeats_the_syn_ack(peer: Peer) -> None:
    peer.stack.listen(8123, 4)
    (synack,) = peer.tcp(40000, 8123, 1000, 0, F.SYN)
    assert synack.tcp is not None
    (again,) = peer.tcp(40000, 8123, 1000, 0, F.SYN)
    assert again.tcp is not None and again.tcp.flags == F.SYN | F.ACK and again.tcp.seq == synack.tcp.seq
    (challenge,) = peer.tcp(40000, 8123, 1500, 0, F.SYN)  # another SYN: RFC 5961 challenge ACK
    assert challenge.tcp is not None and challenge.tcp.flags == F.ACK and challenge.tcp.ack == 1001


def test_send_takes_what_fits_to_the_last_byte(peer: Peer) -> None:
    tcb, _seq, _gseq = established(peer, window=0)
    assert tcb.send(bytes(tcpmod.SNDBUF - 1)) == tcpmod.SNDBUF - 1
    assert tcb.send(b"abc") == 1
    assert tcb.send(b"abc") is None
    assert peer.take() == []  # a zero window: nothing sent


def test_active_open_applies_the_peers_window_scale(peer: Peer) -> None:
    """RFC 7323 §2.2-2.3: both SYNs carried the option, so every later window is shifted by
    the peer's count (the SYN-ACK's own window is not)."""
    tcb = peer.stack.connect(50000, HOST, 80)
    (syn,) = peer.take()
    assert syn.tcp is not None
    iss = syn.tcp.seq
    peer.tcp(80, 50000, 7000, iss + 1, F.SYN | F.ACK, window=500, options=net.TcpOptions(mss=1460, wscale=3))
    assert tcb.snd_wnd == 500
    peer.tcp(80, 50000, 7001, iss + 1, F.ACK, window=100)
    assert tcb.snd_wnd == 800
    tcb.send(bytes(2000))
    assert sum(len(f.payload) for f in peer.take()) == 800


def test_shutdown_write_twice_and_while_connecting(peer: Peer) -> None:
    tcb, _seq, _gseq = established(peer)
    tcb.shutdown_write()
    (fin,) = peer.take()
    assert fin.tcp is not None and fin.tcp.flags & F.FIN
    tcb.shutdown_write()
    assert peer.take() == [] and tcb.state == tcpmod.FIN_WAIT_1
    connecting = peer.stack.connect(50000, HOST, 80)
    peer.take()
    connecting.shutdown_write()  # Linux tcp_shutdown: SYN_SENT goes to CLOSE
    assert connecting.state == tcpmod.CLOSED and (50000, HOST, 80) not in peer.stack.conns


def test_the_delayed_ack_timer_runs_from_the_data_it_acknowledges(peer: Peer) -> None:
    """RFC 1122 §4.2.3.2 / RFC 9293 §3.8.6.3: the ACK of received data is delayed, by a timer
    started when that data came: a pure ACK (nothing to acknowledge) neither starts it nor,
    arriving while the ACK waits, pushes it back."""
    tcb, seq, gseq = established(peer)
    assert peer.tcp(40000, 8123, seq, gseq, F.ACK, window=60000) == []  # a window update: no data
    assert peer.advance(tcpmod.DELACK_NS // 2) == []
    assert peer.tcp(40000, 8123, seq, gseq, F.ACK, b"one") == []  # one segment: the ACK waits
    assert peer.advance(tcpmod.DELACK_NS // 2) == []
    assert peer.tcp(40000, 8123, seq + 3, gseq, F.ACK, window=50000) == []  # another update
    assert peer.advance(tcpmod.DELACK_NS - tcpmod.DELACK_NS // 2 - 1) == []
    (ack,) = peer.advance(1)
    assert ack.tcp is not None and ack.tcp.ack == seq + 3 and not ack.payload
    assert tcb.recv(10) == b"one"
