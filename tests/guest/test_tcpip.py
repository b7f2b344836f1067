"""The guest's IPv4 stack driven in-process by a scripted peer: frames built with arch.net
go in through a fake NIC, and the frames the stack emits are parsed and checked (ARP reply,
ICMP echo reply, SYN-ACK, ACKs, retransmission after a timeout, the FIN handshakes, RST
on a closed port, the peer's window respected, malformed frames dropped)."""

from __future__ import annotations

import errno
import random

import pytest

from unirealm.arch import net
from unirealm.guest.net import tcp as tcpmod
from unirealm.guest.net.dhcp import DhcpClient, parse_ip_option
from unirealm.guest.net.stack import NetStack

F = net.TcpFlags
GUEST_MAC, HOST_MAC = net.KVMTOOL_GUEST_MAC, net.KVMTOOL_HOST_MAC
GUEST, HOST = net.KVMTOOL_GUEST_IP, net.KVMTOOL_GATEWAY_IP
MS = 1_000_000


class FakeNic:
    def __init__(self) -> None:
        self.mac = GUEST_MAC
        self.inbox: list[bytes] = []
        self.sent: list[bytes] = []

    def poll(self) -> list[bytes]:
        out, self.inbox = self.inbox, []
        return out

    def send(self, frame: bytes) -> bool:
        self.sent.append(frame)
        return True


class Peer:
    """The host side of the wire: a clock, the stack, and helpers to script TCP."""

    def __init__(self) -> None:
        self.now = 10**12
        self.nic = FakeNic()
        rng = random.Random(7)
        self.stack = NetStack(self.nic, lambda: self.now, lambda: rng.getrandbits(32))
        self.stack.configure(GUEST, 24, HOST)
        self.stack.arp[HOST] = HOST_MAC
        self.ident = 0

    def feed(self, frame: bytes) -> list[net.ParsedFrame]:
        self.nic.inbox.append(frame)
        return self.run()

    def run(self) -> list[net.ParsedFrame]:
        self.stack.poll()
        return self.take()

    def take(self) -> list[net.ParsedFrame]:
        out = [net.parse_frame(f) for f in self.nic.sent]
        self.nic.sent.clear()
        return out

    def advance(self, ns: int) -> list[net.ParsedFrame]:
        self.now += ns
        return self.run()

    def tcp(self, sport: int, dport: int, seq: int, ack: int, flags: int, data: bytes = b"", window: int = 65535,
            options: net.TcpOptions | None = None) -> list[net.ParsedFrame]:
        self.ident += 1
        seg = net.Tcp(sport, dport, seq, ack, flags, window, options or net.TcpOptions())
        return self.feed(net.tcp_frame(GUEST_MAC, HOST_MAC, HOST, GUEST, seg, data, self.ident))

    def handshake(self, port: int, sport: int = 40000, window: int = 65535, mss: int = 1460,
                  wscale: int | None = None) -> tuple[int, int]:
        """SYN -> SYN-ACK -> ACK; returns (our next seq, the guest's next seq)."""
        out = self.tcp(sport, port, 1000, 0, F.SYN, window=window,
                       options=net.TcpOptions(mss=mss, wscale=wscale, sack_permitted=True))
        (synack,) = out
        t = synack.tcp
        assert t is not None and t.flags == F.SYN | F.ACK and t.ack == 1001
        assert t.options.mss == 1460
        assert (t.options.wscale is not None) == (wscale is not None)
        assert self.tcp(sport, port, 1001, t.seq + 1, F.ACK, window=window) == []
        return 1001, (t.seq + 1) & 0xFFFF_FFFF


@pytest.fixture
def peer() -> Peer:
    return Peer()


def test_arp_request_answered(peer: Peer) -> None:
    out = peer.feed(net.arp_frame(net.ArpOp.REQUEST, HOST_MAC, HOST, net.ZERO_MAC, GUEST))
    assert len(out) == 1 and out[0].arp is not None
    assert out[0].eth.dst == HOST_MAC and out[0].eth.src == GUEST_MAC
    assert out[0].arp == net.Arp(net.ArpOp.REPLY, GUEST_MAC, GUEST, HOST_MAC, HOST)
    # Not for us: no answer.
    assert peer.feed(net.arp_frame(net.ArpOp.REQUEST, HOST_MAC, HOST, net.ZERO_MAC, net.ip_bytes("192.168.33.99"))) == []


def test_arp_resolution_before_sending(peer: Peer) -> None:
    peer.stack.arp.clear()
    listener = peer.stack.listen(80, 4)
    assert listener is not None
    other = net.ip_bytes("10.1.2.3")  # off-link: through the gateway
    peer.stack.send_udp(other, 5000, 53, b"q")
    (req,) = peer.take()
    assert req.arp is not None and req.arp.op == net.ArpOp.REQUEST and req.arp.tpa == HOST
    assert req.eth.dst == net.BROADCAST_MAC
    out = peer.feed(net.arp_frame(net.ArpOp.REPLY, HOST_MAC, HOST, GUEST_MAC, GUEST))
    (udp,) = out
    assert udp.eth.dst == HOST_MAC and udp.ip is not None and udp.ip.dst == other and udp.payload == b"q"


def test_icmp_echo_reply(peer: Peer) -> None:
    req = net.IcmpEcho(net.IcmpType.ECHO_REQUEST, 0x1234, 7, b"ping-data").pack()
    out = peer.feed(net.ethernet_frame(GUEST_MAC, HOST_MAC, net.EtherType.IPV4,
                                       net.ipv4_packet(HOST, GUEST, net.IpProto.ICMP, req)))
    (rep,) = out
    assert rep.icmp == net.IcmpEcho(net.IcmpType.ECHO_REPLY, 0x1234, 7, b"ping-data")


def test_rst_on_closed_port(peer: Peer) -> None:
    (rst,) = peer.tcp(40000, 81, 5000, 0, F.SYN)
    t = rst.tcp
    assert t is not None and t.flags == F.RST | F.ACK and t.seq == 0 and t.ack == 5001
    (rst2,) = peer.tcp(40000, 81, 5000, 777, F.ACK, b"xx")
    assert rst2.tcp is not None and rst2.tcp.flags == F.RST and rst2.tcp.seq == 777
    assert peer.tcp(40000, 81, 5000, 0, F.RST) == []  # never a reset for a reset


def test_passive_open_data_and_fin(peer: Peer) -> None:
    listener = peer.stack.listen(8123, 4)
    seq, gseq = peer.handshake(8123)
    assert len(listener.ready) == 1
    tcb = listener.ready.popleft()
    assert tcb.state == tcpmod.ESTABLISHED
    # the request's ACK waits for the answer to carry it (delayed ACK)
    assert peer.tcp(40000, 8123, seq, gseq, F.ACK | F.PSH, b"GET / HTTP/1.1\r\n\r\n") == []
    seq += 18
    assert tcb.recv(100) == b"GET / HTTP/1.1\r\n\r\n"
    assert tcb.recv(100) is None
    assert tcb.send(b"HTTP/1.1 200 OK\r\n\r\nHello, World!\n") == 33
    (data,) = peer.take()
    assert data.tcp is not None and data.tcp.seq == gseq and data.payload.endswith(b"Hello, World!\n")
    assert data.tcp.flags & F.PSH and data.tcp.ack == seq
    gseq += 33
    tcb.close()  # the server closes first: FIN_WAIT_1
    (fin,) = peer.take()
    assert fin.tcp is not None and fin.tcp.flags == F.FIN | F.ACK and fin.tcp.seq == gseq
    assert tcb.state == tcpmod.FIN_WAIT_1
    assert peer.tcp(40000, 8123, seq, gseq + 1, F.ACK) == []
    assert tcb.state == tcpmod.FIN_WAIT_2
    (last,) = peer.tcp(40000, 8123, seq, gseq + 1, F.FIN | F.ACK)
    assert last.tcp is not None and last.tcp.flags == F.ACK and last.tcp.ack == seq + 1
    assert tcb.state == tcpmod.TIME_WAIT
    peer.advance(tcpmod.TIME_WAIT_NS + 1)
    assert tcb.state == tcpmod.CLOSED and not peer.stack.conns


def test_peer_closes_first(peer: Peer) -> None:
    listener = peer.stack.listen(8123, 4)
    seq, gseq = peer.handshake(8123)
    tcb = listener.ready.popleft()
    (ack,) = peer.tcp(40000, 8123, seq, gseq, F.FIN | F.ACK)
    assert ack.tcp is not None and ack.tcp.ack == seq + 1
    assert tcb.state == tcpmod.CLOSE_WAIT and tcb.recv(10) == b""
    tcb.close()
    (fin,) = peer.take()
    assert fin.tcp is not None and fin.tcp.flags & F.FIN and tcb.state == tcpmod.LAST_ACK
    peer.tcp(40000, 8123, seq + 1, gseq + 1, F.ACK)
    assert tcb.state == tcpmod.CLOSED and not peer.stack.conns


def test_retransmission_after_timeout(peer: Peer) -> None:
    listener = peer.stack.listen(8123, 4)
    seq, gseq = peer.handshake(8123)
    tcb = listener.ready.popleft()
    tcb.send(b"lost once")
    (first,) = peer.take()
    assert first.payload == b"lost once"
    assert peer.advance(tcpmod.RTO_INITIAL // 2) == []  # not yet
    (again,) = peer.advance(tcpmod.RTO_INITIAL)
    assert again.tcp is not None and again.tcp.seq == gseq and again.payload == b"lost once"
    assert tcb.retransmits == 1
    # The backoff doubled the timeout.
    assert peer.advance(tcpmod.RTO_INITIAL + MS) == []
    (third,) = peer.advance(tcpmod.RTO_INITIAL)
    assert third.payload == b"lost once"
    assert peer.tcp(40000, 8123, seq, gseq + 9, F.ACK) == []
    assert not tcb.sndbuf and tcb.rtx_deadline is None
    assert peer.advance(10 * tcpmod.RTO_INITIAL) == []


def test_synack_retransmitted_and_abort(peer: Peer) -> None:
    peer.stack.listen(8123, 4)
    (synack,) = peer.tcp(40000, 8123, 1000, 0, F.SYN, options=net.TcpOptions(mss=1460))
    (again,) = peer.advance(tcpmod.RTO_INITIAL + 1)
    assert again.tcp is not None and again.tcp.flags == F.SYN | F.ACK and again.tcp.seq == synack.tcp.seq
    for _ in range(tcpmod.MAX_RETRIES + 1):
        peer.advance(tcpmod.RTO_MAX + 1)
    assert not peer.stack.conns


def test_window_respected_and_mss(peer: Peer) -> None:
    listener = peer.stack.listen(8123, 4)
    seq, gseq = peer.handshake(8123, window=3000, mss=1000)
    tcb = listener.ready.popleft()
    payload = bytes(range(256)) * 40  # 10240 bytes
    assert tcb.send(payload) == len(payload)
    out = peer.take()
    assert [len(f.payload) for f in out] == [1000, 1000, 1000]  # the 3000-byte window, 1000-byte MSS
    # Acknowledge 2000 bytes with a window of 0: nothing more may go.
    assert peer.tcp(40000, 8123, seq, gseq + 2000, F.ACK, window=0) == []
    # Zero-window probe on the timer: one byte past the window.
    peer.tcp(40000, 8123, seq, gseq + 3000, F.ACK, window=0)
    (probe,) = peer.advance(tcpmod.RTO_MAX)
    assert len(probe.payload) == 1 and probe.tcp is not None and probe.tcp.seq == gseq + 3000
    # The window opens: data flows again, at most MSS per segment, within the window.
    out = peer.tcp(40000, 8123, seq, gseq + 3001, F.ACK, window=2500)
    assert [len(f.payload) for f in out] == [1000, 1000, 500]
    assert out[0].tcp is not None and out[0].tcp.seq == gseq + 3001
    got = bytearray(payload[:3001]) + b"".join(f.payload for f in out)
    assert bytes(got) == payload[: len(got)]


def test_window_scale_applied(peer: Peer) -> None:
    listener = peer.stack.listen(8123, 4)
    seq, gseq = peer.handshake(8123, window=65535, wscale=2)
    tcb = listener.ready.popleft()
    assert tcb.peer_wscale == 2
    peer.tcp(40000, 8123, seq, gseq, F.ACK, window=1000)  # 1000 << 2 = 4000 bytes
    tcb.send(bytes(10000))
    assert sum(len(f.payload) for f in peer.take()) == 4000


def test_our_receive_window_and_out_of_order(peer: Peer) -> None:
    listener = peer.stack.listen(8123, 4)
    seq, gseq = peer.handshake(8123)
    tcb = listener.ready.popleft()
    (dup,) = peer.tcp(40000, 8123, seq + 100, gseq, F.ACK, b"future")  # a gap: duplicate ACK
    assert dup.tcp is not None and dup.tcp.ack == seq and tcb.recv(10) is None
    assert peer.tcp(40000, 8123, seq, gseq, F.ACK, b"abc") == []  # in order: the ACK is delayed
    (ack,) = peer.advance(tcpmod.DELACK_NS)
    assert ack.tcp is not None and ack.tcp.ack == seq + 3 and ack.tcp.window == tcpmod.RCVBUF - 3
    assert peer.tcp(40000, 8123, seq + 1, gseq, F.ACK, b"bcdef") == []  # overlaps: trimmed
    (ack2,) = peer.advance(tcpmod.DELACK_NS)
    assert ack2.tcp is not None and ack2.tcp.ack == seq + 6 and tcb.recv(100) == b"abcdef"


def test_active_open_and_reset(peer: Peer) -> None:
    tcb = peer.stack.connect(50000, HOST, 80)
    (syn,) = peer.take()
    assert syn.tcp is not None and syn.tcp.flags == F.SYN and syn.tcp.options.mss == 1460
    iss = syn.tcp.seq
    (ack,) = peer.tcp(80, 50000, 7000, iss + 1, F.SYN | F.ACK, options=net.TcpOptions(mss=1400))
    assert ack.tcp is not None and ack.tcp.flags == F.ACK and ack.tcp.ack == 7001
    assert tcb.state == tcpmod.ESTABLISHED and tcb.peer_mss == 1400
    peer.tcp(80, 50000, 7001, iss + 1, F.RST)
    assert tcb.state == tcpmod.CLOSED and tcb.error == errno.ECONNRESET
    tcb2 = peer.stack.connect(50001, HOST, 81)
    (syn2,) = peer.take()
    peer.tcp(81, 50001, 0, syn2.tcp.seq + 1, F.RST | F.ACK)
    assert tcb2.error == errno.ECONNREFUSED


def test_backlog_limits_pending(peer: Peer) -> None:
    listener = peer.stack.listen(8123, 2)
    peer.handshake(8123, sport=40001)
    peer.handshake(8123, sport=40002)
    assert peer.tcp(40003, 8123, 1000, 0, F.SYN) == []  # full: the SYN is dropped
    listener.ready.popleft()
    peer.handshake(8123, sport=40003)


def test_udp_endpoint(peer: Peer) -> None:
    from unirealm.guest.net.stack import UdpEndpoint

    ep = peer.stack.udp[5353] = UdpEndpoint(5353)
    peer.feed(net.udp_frame(GUEST_MAC, HOST_MAC, HOST, GUEST, 9999, 5353, b"hello"))
    assert list(ep.queue) == [(HOST, 9999, b"hello")]
    peer.stack.send_udp(HOST, 5353, 9999, b"back")
    (out,) = peer.take()
    assert out.udp is not None and out.udp.dport == 9999 and out.payload == b"back"


@pytest.mark.parametrize("seed", range(5))
def test_malformed_frames_dropped(peer: Peer, seed: int) -> None:
    peer.stack.listen(8123, 4)
    good = net.tcp_frame(GUEST_MAC, HOST_MAC, HOST, GUEST, net.Tcp(40000, 8123, 1, 0, F.SYN, 1000,
                                                                    net.TcpOptions(mss=1460)))
    rng = random.Random(seed)
    for _ in range(300):
        frame = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        frame = frame[: rng.randint(0, len(frame))] if rng.random() < 0.3 else frame
        peer.feed(bytes(frame))  # never raises
    peer.feed(b"")
    peer.feed(b"\xff" * 13)
    assert peer.stack.stats["dropped"] > 0


def test_dhcp_client_against_scripted_server(peer: Peer) -> None:
    stack = peer.stack
    stack.configure(net.ANY_IP, 0, None)
    offered = net.ip_bytes("192.168.33.15")

    def server(deadline: int | None = None) -> None:
        for frame in list(peer.nic.sent):
            f = net.parse_frame(frame)
            if f.udp is None or f.udp.dport != 67:
                continue
            assert f.ip is not None and f.ip.src == net.ANY_IP and f.ip.dst == net.BROADCAST_IP
            msg = net.Dhcp.parse(f.payload)
            kind = {net.DhcpMessageType.DISCOVER: net.DhcpMessageType.OFFER,
                    net.DhcpMessageType.REQUEST: net.DhcpMessageType.ACK}[msg.message_type]
            reply = net.Dhcp(net.DhcpOp.BOOTREPLY, msg.xid, msg.chaddr, yiaddr=offered, options={
                net.DhcpOption.MESSAGE_TYPE: bytes([kind]), net.DhcpOption.SUBNET_MASK: net.prefix_mask(24),
                net.DhcpOption.ROUTER: HOST, net.DhcpOption.DNS: HOST, net.DhcpOption.SERVER_ID: HOST,
                net.DhcpOption.LEASE_TIME: (3600).to_bytes(4, "big")})
            peer.nic.inbox.append(net.udp_frame(net.BROADCAST_MAC, HOST_MAC, HOST, net.BROADCAST_IP, 67, 68,
                                                reply.pack()))
        peer.nic.sent.clear()
        peer.now += MS

    lease = DhcpClient(stack, server).run()
    assert lease == (offered, 24, HOST, [HOST])


def test_ip_option() -> None:
    assert parse_ip_option("10.0.2.15/24,10.0.2.2") == (net.ip_bytes("10.0.2.15"), 24, net.ip_bytes("10.0.2.2"))
    assert parse_ip_option("10.0.0.5") == (net.ip_bytes("10.0.0.5"), 24, None)
    with pytest.raises(ValueError):
        parse_ip_option("10.0.0/8")


def test_rst_resets_only_exactly_in_sequence(peer: Peer) -> None:
    """RFC 5961 §3.2: an in-window RST that is not at rcv_nxt gets a challenge ACK and the
    connection lives on; one outside the window is dropped; only an exact one resets."""
    listener = peer.stack.listen(8123, 4)
    seq, _ = peer.handshake(8123)
    tcb = listener.ready.popleft()
    (challenge,) = peer.tcp(40000, 8123, seq + 1, 0, F.RST)
    assert challenge.tcp is not None and challenge.tcp.flags == F.ACK and challenge.tcp.ack == seq
    assert peer.tcp(40000, 8123, seq + 10_000_000, 0, F.RST) == []
    assert peer.tcp(40000, 8123, seq - 1, 0, F.RST) == []
    assert tcb.state == tcpmod.ESTABLISHED
    assert peer.tcp(40000, 8123, seq, 0, F.RST) == []
    assert tcb.state == tcpmod.CLOSED and tcb.error == errno.ECONNRESET


def test_handshake_completes_only_on_the_right_ack(peer: Peer) -> None:
    """SYN_RCVD: an ACK that does not acknowledge our SYN is answered with a RST and the
    connection is not established (RFC 9293 §3.10.7.4); SYN_SENT: likewise for a SYN-ACK."""
    listener = peer.stack.listen(8123, 4)
    (synack,) = peer.tcp(40000, 8123, 1000, 0, F.SYN)
    assert synack.tcp is not None
    (rst,) = peer.tcp(40000, 8123, 1001, synack.tcp.seq + 2, F.ACK)
    assert rst.tcp is not None and rst.tcp.flags & F.RST and rst.tcp.seq == synack.tcp.seq + 2
    assert not listener.ready
    assert peer.tcp(40000, 8123, 1001, synack.tcp.seq + 1, F.ACK) == []
    assert len(listener.ready) == 1
    tcb = peer.stack.connect(50000, HOST, 80)
    (syn,) = peer.take()
    assert syn.tcp is not None
    (rst2,) = peer.tcp(80, 50000, 7000, syn.tcp.seq + 5, F.SYN | F.ACK)
    assert rst2.tcp is not None and rst2.tcp.flags & F.RST
    assert tcb.state == tcpmod.SYN_SENT


def test_syn_in_a_synchronized_connection_gets_a_challenge_ack(peer: Peer) -> None:
    """RFC 5961 §4: a SYN on an established connection, wherever its sequence number, is
    answered with an ACK and changes nothing (RFC 793 would have reset the connection)."""
    listener = peer.stack.listen(8123, 4)
    seq, gseq = peer.handshake(8123)
    tcb = listener.ready.popleft()
    for syn_seq in (seq, seq + 100, seq - 5000, seq + 3_000_000_000):
        (challenge,) = peer.tcp(40000, 8123, syn_seq, 0, F.SYN)
        assert challenge.tcp is not None and challenge.tcp.flags == F.ACK
        assert (challenge.tcp.seq, challenge.tcp.ack) == (gseq, seq)
        assert tcb.state == tcpmod.ESTABLISHED
    peer.tcp(40000, 8123, seq, gseq, F.ACK | F.PSH, b"still here")
    assert tcb.recv(100) == b"still here"


def test_ack_outside_what_was_sent_or_offered_discards_the_segment(peer: Peer) -> None:
    """RFC 5961 §5.2: SEG.ACK must lie in [SND.UNA - MAX.SND.WND, SND.NXT]; otherwise the
    segment, data and all, is discarded and answered with an ACK."""
    listener = peer.stack.listen(8123, 4)
    seq, gseq = peer.handshake(8123, window=8000)
    tcb = listener.ready.popleft()
    assert tcb.send(b"x" * 100) == 100
    peer.take()
    # acknowledges bytes never sent: dropped with its data
    (ack,) = peer.tcp(40000, 8123, seq, gseq + 101, F.ACK | F.PSH, b"future", window=8000)
    assert ack.tcp is not None and ack.tcp.ack == seq and tcb.recv(100) is None
    assert tcb.snd_una == gseq
    # older than the largest window ever offered (8000): dropped too
    (ack,) = peer.tcp(40000, 8123, seq, gseq - 8001, F.ACK | F.PSH, b"ancient", window=8000)
    assert ack.tcp is not None and ack.tcp.ack == seq and tcb.recv(100) is None
    # a duplicate ACK inside that range is fine: the data is taken
    peer.tcp(40000, 8123, seq, gseq - 10, F.ACK | F.PSH, b"fine", window=8000)
    assert tcb.recv(100) == b"fine"
    peer.tcp(40000, 8123, seq + 4, gseq + 100, F.ACK, window=8000)
    assert tcb.snd_una == gseq + 100


def test_delayed_ack(peer: Peer) -> None:
    """RFC 9293 §3.8.6.3 / RFC 1122 §4.2.3.2: one in-order segment is ACKed after at most
    DELACK_NS (< 0.5 s) unless data of ours carries the ACK first; every second segment,
    a FIN and anything out of order are ACKed at once."""
    listener = peer.stack.listen(8123, 4)
    seq, gseq = peer.handshake(8123)
    tcb = listener.ready.popleft()
    assert tcpmod.DELACK_NS < 500 * MS
    assert peer.tcp(40000, 8123, seq, gseq, F.ACK, b"a" * 100) == []
    assert peer.advance(tcpmod.DELACK_NS - 1) == []
    (ack,) = peer.advance(1)
    assert ack.tcp is not None and ack.tcp.ack == seq + 100 and ack.payload == b""
    seq += 100
    assert peer.tcp(40000, 8123, seq, gseq, F.ACK, b"b" * 1460) == []
    (ack,) = peer.tcp(40000, 8123, seq + 1460, gseq, F.ACK, b"c" * 1460)  # the second: at once
    assert ack.tcp is not None and ack.tcp.ack == seq + 2920
    seq += 2920
    (dup,) = peer.tcp(40000, 8123, seq - 50, gseq, F.ACK, b"d" * 50)  # old data: at once
    assert dup.tcp is not None and dup.tcp.ack == seq
    assert peer.tcp(40000, 8123, seq, gseq, F.ACK, b"ping") == []
    assert tcb.send(b"pong") == 4  # our answer carries the ACK: no pure ACK follows
    (data,) = peer.take()
    assert data.payload == b"pong" and data.tcp is not None and data.tcp.ack == seq + 4
    assert peer.advance(tcpmod.DELACK_NS) == []
    (fin_ack,) = peer.tcp(40000, 8123, seq + 4, gseq + 4, F.ACK | F.FIN)
    assert fin_ack.tcp is not None and fin_ack.tcp.ack == seq + 5
    assert tcb.recv(10000) == b"a" * 100 + b"b" * 1460 + b"c" * 1460 + b"ping"
