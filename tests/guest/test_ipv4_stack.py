"""The IPv4 stack against RFC 791/792/826/768/1071/1122, with frames built and checked here
byte by byte (checksums computed in this file from RFC 1071, not by arch.net): header and
pseudo-header checksums of what goes out, fragments and bad checksums dropped, broadcasts
never answered, ARP merge rules and retries, routing on-link or through the gateway, the
counters, ports, and the NIC told of a burst once."""

from __future__ import annotations

import errno
import struct

import pytest

from unirealm.arch import net
from unirealm.guest.net import stack as stackmod
from unirealm.guest.net import tcp as tcpmod
from unirealm.guest.net.stack import NetStack, UdpEndpoint

from .test_tcpip import GUEST, GUEST_MAC, HOST, HOST_MAC, FakeNic, Peer

F = net.TcpFlags
NEIGHBOUR = bytes([192, 168, 33, 50])
NEIGHBOUR_MAC = bytes.fromhex("02aabbccddee")
BCAST = bytes([255, 255, 255, 255])


@pytest.fixture
def peer() -> Peer:
    return Peer()


def rfc1071(data: bytes) -> int:
    """RFC 1071 §4.1: the ones' complement of the ones' complement sum of 16-bit words."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ip_header(src: bytes, dst: bytes, proto: int, payload_len: int, flags_frag: int = 0x4000,
              ttl: int = 64, good: bool = True) -> bytes:
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, 1, flags_frag, ttl, proto, 0, src, dst)
    cks = rfc1071(head) ^ (0 if good else 0x0101)
    return head[:10] + struct.pack("!H", cks) + head[12:]


def echo_request(ident: int, seq: int, data: bytes) -> bytes:
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + data
    return body[:2] + struct.pack("!H", rfc1071(body)) + body[4:]


def ping_frame(dst_ip: bytes = GUEST, dst_mac: bytes = GUEST_MAC, flags_frag: int = 0x4000,
               good: bool = True) -> bytes:
    icmp = echo_request(0x4242, 9, b"abcdefgh")
    eth = dst_mac + HOST_MAC + b"\x08\x00"
    return eth + ip_header(HOST, dst_ip, 1, len(icmp), flags_frag, good=good) + icmp


def test_echo_reply_checksums_by_rfc1071(peer: Peer) -> None:
    peer.nic.inbox.append(ping_frame())
    peer.stack.poll()
    (raw,) = peer.nic.sent
    assert raw[:6] == HOST_MAC and raw[6:12] == GUEST_MAC and raw[12:14] == b"\x08\x00"
    ip = raw[14:34]
    assert ip[0] == 0x45 and rfc1071(ip) == 0  # RFC 791: the header sums to zero
    assert struct.unpack("!H", ip[2:4])[0] == len(raw) - 14
    assert ip[9] == 1 and ip[12:16] == GUEST and ip[16:20] == HOST and ip[8] > 0
    icmp = raw[34:]
    assert rfc1071(icmp) == 0  # RFC 792: the checksum covers the whole ICMP message
    assert icmp[0] == 0 and icmp[1] == 0 and icmp[4:] == struct.pack("!HH", 0x4242, 9) + b"abcdefgh"
    assert peer.stack.stats["echo"] == 1


def test_tcp_and_udp_checksums_cover_the_pseudo_header(peer: Peer) -> None:
    syn = net.Tcp(40000, 81, 5000, 0, F.SYN, 1000).pack(HOST, GUEST)
    peer.nic.inbox.append(net.ethernet_frame(GUEST_MAC, HOST_MAC, net.EtherType.IPV4,
                                             net.ipv4_packet(HOST, GUEST, net.IpProto.TCP, syn)))
    peer.stack.poll()  # answered with a RST by the closed port
    peer.stack.send_udp(HOST, 5353, 9999, b"odd")
    tcp_raw, udp_raw = peer.nic.sent
    for raw, proto in ((tcp_raw, 6), (udp_raw, 17)):
        seg = raw[34:]
        pseudo = GUEST + HOST + struct.pack("!BBH", 0, proto, len(seg))
        assert rfc1071(pseudo + seg) == 0
    assert struct.unpack("!HHH", udp_raw[34:40]) == (5353, 9999, 8 + 3)


@pytest.mark.parametrize("flags_frag", [0x2000, 0x0001, 0x2005, 0x4000 | 0x0010])
def test_fragments_are_dropped(peer: Peer, flags_frag: int) -> None:
    assert peer.feed(ping_frame(flags_frag=flags_frag)) == []
    assert peer.feed(ping_frame(flags_frag=flags_frag)) == []
    assert peer.stack.stats["dropped"] == 2
    assert len(peer.feed(ping_frame())) == 1  # an unfragmented one (DF only) is answered


def test_other_ethertypes_are_dropped(peer: Peer) -> None:
    ipv6 = GUEST_MAC + HOST_MAC + b"\x86\xdd" + bytes(40)
    assert peer.feed(ipv6) == [] and peer.feed(ipv6) == []
    assert peer.stack.stats["dropped"] == 2


def test_a_bad_header_checksum_is_dropped(peer: Peer) -> None:
    assert peer.feed(ping_frame(good=False)) == []
    assert peer.stack.stats["dropped"] == 1 and peer.stack.stats["echo"] == 0


def test_counters(peer: Peer) -> None:
    other_mac = bytes.fromhex("020000000099")
    peer.feed(ping_frame(dst_mac=other_mac))
    peer.feed(ping_frame(dst_mac=other_mac))
    assert peer.stack.stats == {"rx": 2, "tx": 0, "dropped": 2, "rst_sent": 0, "echo": 0}
    peer.feed(ping_frame())
    peer.tcp(40000, 81, 5000, 0, F.SYN)
    assert peer.stack.stats == {"rx": 4, "tx": 2, "dropped": 2, "rst_sent": 1, "echo": 1}


def test_another_hosts_address_is_dropped(peer: Peer) -> None:
    assert peer.feed(ping_frame(dst_ip=NEIGHBOUR)) == []
    assert peer.stack.stats["dropped"] == 1


def test_broadcasts_are_never_answered(peer: Peer) -> None:
    """RFC 1122 §3.2.2.6 (Linux's icmp_echo_ignore_broadcasts) and §4.2.3.10: no echo reply
    and no SYN-ACK or RST for a datagram sent to the broadcast address."""
    peer.stack.listen(8123, 4)
    assert peer.feed(ping_frame(dst_ip=BCAST, dst_mac=net.BROADCAST_MAC)) == []
    syn = net.Tcp(40000, 8123, 1, 0, F.SYN, 1000).pack(HOST, BCAST)
    frame = net.ethernet_frame(net.BROADCAST_MAC, HOST_MAC, net.EtherType.IPV4,
                               net.ipv4_packet(HOST, BCAST, net.IpProto.TCP, syn))
    assert peer.feed(frame) == [] and not peer.stack.conns
    assert peer.stack.stats["echo"] == 0


def test_arp_merge_rules(peer: Peer) -> None:
    """RFC 826: a sender already in the table is updated by any packet; a new one is added
    only by a packet for us; nonsense senders are ignored."""
    stack = peer.stack
    third = bytes([192, 168, 33, 77])
    peer.feed(net.arp_frame(net.ArpOp.REQUEST, NEIGHBOUR_MAC, NEIGHBOUR, net.ZERO_MAC, third))
    assert NEIGHBOUR not in stack.arp and peer.take() == []
    moved = bytes.fromhex("02aabbccdd01")
    peer.feed(net.arp_frame(net.ArpOp.REQUEST, moved, HOST, net.ZERO_MAC, third))  # gratuitous-like
    assert stack.arp[HOST] == moved and peer.take() == []
    peer.feed(net.arp_frame(net.ArpOp.REQUEST, net.ZERO_MAC, NEIGHBOUR, net.ZERO_MAC, GUEST))
    peer.feed(net.arp_frame(net.ArpOp.REQUEST, NEIGHBOUR_MAC, net.ANY_IP, net.ZERO_MAC, GUEST))
    assert NEIGHBOUR not in stack.arp and peer.take() == []
    (rep,) = peer.feed(net.arp_frame(net.ArpOp.REQUEST, NEIGHBOUR_MAC, NEIGHBOUR, net.ZERO_MAC, GUEST))
    assert stack.arp[NEIGHBOUR] == NEIGHBOUR_MAC and rep.arp is not None and rep.arp.op == net.ArpOp.REPLY
    # a reply for us is not answered
    assert peer.feed(net.arp_frame(net.ArpOp.REPLY, NEIGHBOUR_MAC, NEIGHBOUR, GUEST_MAC, GUEST)) == []


def test_arp_retries_then_drops_the_queue(peer: Peer) -> None:
    stack = peer.stack
    stack.send_udp(NEIGHBOUR, 1, 2, b"a")
    stack.send_udp(NEIGHBOUR, 1, 2, b"b")
    (req,) = peer.take()  # one request for both
    assert req.arp is not None and req.arp.tpa == NEIGHBOUR and req.arp.spa == GUEST
    assert stack.next_deadline() == peer.now + stackmod.ARP_RETRY_NS
    assert peer.advance(stackmod.ARP_RETRY_NS - 1) == []
    for _ in range(stackmod.ARP_TRIES - 1):
        (again,) = peer.advance(stackmod.ARP_RETRY_NS)
        assert again.arp is not None and again.arp.tpa == NEIGHBOUR
    assert peer.advance(stackmod.ARP_RETRY_NS) == []
    assert not stack.arp_wait and stack.stats["dropped"] == 2 and stack.next_deadline() is None


def test_routing_on_link_direct_off_link_through_the_gateway(peer: Peer) -> None:
    stack = peer.stack
    stack.arp[NEIGHBOUR] = NEIGHBOUR_MAC
    stack.send_udp(NEIGHBOUR, 1, 2, b"x")
    stack.send_udp(bytes([8, 8, 8, 8]), 1, 2, b"y")
    direct, routed = peer.take()
    assert direct.eth.dst == NEIGHBOUR_MAC and routed.eth.dst == HOST_MAC
    assert routed.ip is not None and routed.ip.dst == bytes([8, 8, 8, 8])
    stack.configure(GUEST, 24, None)  # no gateway: off-link hosts are asked for directly
    stack.send_udp(bytes([8, 8, 4, 4]), 1, 2, b"z")
    (req,) = peer.take()
    assert req.arp is not None and req.arp.tpa == bytes([8, 8, 4, 4])


def test_the_peers_mac_is_learned_from_on_link_traffic_only(peer: Peer) -> None:
    stack = peer.stack
    icmp = echo_request(1, 1, b"")
    far = bytes([10, 9, 8, 7])
    for src in (NEIGHBOUR, far):
        frame = GUEST_MAC + NEIGHBOUR_MAC + b"\x08\x00" + ip_header(src, GUEST, 1, len(icmp)) + icmp
        peer.feed(frame)
    assert stack.arp.get(NEIGHBOUR) == NEIGHBOUR_MAC and far not in stack.arp


def test_udp_queue_bound_and_unknown_port(peer: Peer) -> None:
    ep = peer.stack.udp[7000] = UdpEndpoint(7000)
    assert ep.port == 7000
    for i in range(stackmod.UDP_QUEUE + 3):
        peer.feed(net.udp_frame(GUEST_MAC, HOST_MAC, HOST, GUEST, 9, 7000, bytes([i % 256])))
    assert len(ep.queue) == stackmod.UDP_QUEUE and ep.dropped == 3
    peer.feed(net.udp_frame(GUEST_MAC, HOST_MAC, HOST, GUEST, 9, 7001, b"nobody"))
    assert peer.stack.stats["dropped"] == 1


def test_reset_for_a_segment_with_data_and_fin(peer: Peer) -> None:
    """RFC 9293 §3.10.7.1: no ACK: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>, SEG.LEN
    counting SYN and FIN."""
    (rst,) = peer.tcp(40000, 82, 7000, 0, F.FIN | F.PSH, b"hello")
    assert rst.tcp is not None and (rst.tcp.seq, rst.tcp.ack, rst.tcp.flags) == (0, 7006, F.RST | F.ACK)


def test_ports_and_addresses_in_use(peer: Peer) -> None:
    stack = peer.stack
    stack.listen(8080, 1)
    assert stack.tcp_port_used(8080) and not stack.tcp_port_used(8081)
    with pytest.raises(OSError) as exc:
        stack.listen(8080, 1)
    assert exc.value.errno == errno.EADDRINUSE
    stack.connect(50000, HOST, 80)
    assert stack.tcp_port_used(50000)
    with pytest.raises(OSError) as exc:
        stack.connect(50000, HOST, 80)
    assert exc.value.errno == errno.EADDRINUSE
    lo, hi = stackmod.EPHEMERAL
    stack.next_port = 50000 - 1
    assert stack.ephemeral_port(stack.tcp_port_used) == 50001
    assert lo <= stack.ephemeral_port(lambda p: False) < hi
    with pytest.raises(OSError) as exc:
        stack.ephemeral_port(lambda p: True)
    assert exc.value.errno == errno.EADDRINUSE


def test_connect_over_time_wait_reuses_the_address(peer: Peer) -> None:
    stack = peer.stack
    old = stack.connect(50000, HOST, 80)
    old.state = tcpmod.TIME_WAIT
    new = stack.connect(50000, HOST, 80)
    assert new is not old and old.state == tcpmod.CLOSED and stack.conns[(50000, HOST, 80)] is new


class KickNic(FakeNic):
    def __init__(self) -> None:
        super().__init__()
        self.notified: list[bool] = []
        self.kicks = 0

    def send(self, frame: bytes, notify: bool = True) -> bool:  # type: ignore[override]
        self.notified.append(notify)
        return super().send(frame)

    def kick(self) -> None:
        self.kicks += 1


def test_a_burst_is_announced_to_the_nic_once() -> None:
    nic = KickNic()
    now = [10**12]
    stack = NetStack(nic, lambda: now[0], lambda: 5)
    stack.configure(GUEST, 24, HOST)
    stack.arp[HOST] = HOST_MAC
    stack.send_udp(HOST, 1, 2, b"alone")
    assert nic.notified == [True] and nic.kicks == 0
    with stack.tx_batch():
        with stack.tx_batch():
            stack.send_udp(HOST, 1, 2, b"a")
        stack.send_udp(HOST, 1, 2, b"b")
        assert nic.kicks == 0
    assert nic.notified == [True, False, False] and nic.kicks == 1
    assert stack.stats["tx"] == 3


def test_describe() -> None:
    stack = NetStack(FakeNic(), lambda: 0, lambda: 0)
    stack.configure(GUEST, 24, HOST)
    mac = ":".join(f"{b:02x}" for b in GUEST_MAC)
    assert stack.describe() == f"{'.'.join(map(str, GUEST))}/24 gateway {'.'.join(map(str, HOST))} mac {mac}"
    stack.configure(GUEST, 16, None)
    assert stack.describe().endswith(f"/16 gateway none mac {mac}")


def test_ethernet_padding_is_not_payload(peer: Peer) -> None:
    """RFC 791: the datagram ends at Total Length; the bytes Ethernet pads a short frame
    to 60 with are not part of it (RFC 894)."""
    icmp = echo_request(7, 1, b"")
    frame = GUEST_MAC + HOST_MAC + b"\x08\x00" + ip_header(HOST, GUEST, 1, len(icmp)) + icmp
    frame += b"\xee" * (60 - len(frame))
    (rep,) = peer.feed(frame)
    assert rep.icmp is not None and rep.icmp.data == b"" and rep.icmp.ident == 7


def test_a_header_with_options_and_a_truncated_datagram(peer: Peer) -> None:
    icmp = echo_request(8, 2, b"opt")
    head = struct.pack("!BBHHHBBH4s4s", 0x46, 0, 24 + len(icmp), 1, 0x4000, 64, 1, 0, HOST, GUEST) + b"\x01\x01\x01\x00"
    head = head[:10] + struct.pack("!H", rfc1071(head)) + head[12:]
    (rep,) = peer.feed(GUEST_MAC + HOST_MAC + b"\x08\x00" + head + icmp)  # IHL 6: options skipped
    assert rep.icmp is not None and rep.icmp.data == b"opt"
    short = GUEST_MAC + HOST_MAC + b"\x08\x00" + ip_header(HOST, GUEST, 1, len(icmp) + 10) + icmp
    assert peer.feed(short) == [] and peer.stack.stats["dropped"] == 1


def test_an_unconfigured_stack_answers_nothing_but_hands_udp_to_hooks() -> None:
    """Before DHCP: no address, so no echo replies and no TCP; a UDP hook (the DHCP
    client's) still sees datagrams for its port, whatever their destination."""
    nic = FakeNic()
    stack = NetStack(nic, lambda: 0, lambda: 0)
    assert stack.ip == net.ANY_IP
    seen: list[tuple[bytes, int, bytes]] = []
    stack.udp_hook[68] = lambda src, sport, data: seen.append((src, sport, data))
    nic.inbox += [ping_frame(), net.udp_frame(net.BROADCAST_MAC, HOST_MAC, HOST, BCAST, 67, 68, b"offer")]
    stack.poll()
    assert nic.sent == [] and seen == [(HOST, 67, b"offer")]


def test_udp_from_a_given_source_address(peer: Peer) -> None:
    peer.stack.send_udp(BCAST, 68, 67, b"discover", src=net.ANY_IP)
    (raw,) = peer.nic.sent
    assert raw[:6] == net.BROADCAST_MAC and raw[26:30] == net.ANY_IP and raw[30:34] == BCAST
    seg = raw[34:]
    assert rfc1071(net.ANY_IP + BCAST + struct.pack("!BBH", 0, 17, len(seg)) + seg) == 0


def test_echo_counter_and_ack_to_a_listening_port(peer: Peer) -> None:
    """RFC 9293 §3.10.7.2, LISTEN: any ACK is bad: <SEQ=SEG.ACK><CTL=RST>, ACK field zero."""
    peer.feed(ping_frame())
    peer.feed(ping_frame())
    assert peer.stack.stats["echo"] == 2
    peer.stack.listen(8123, 4)
    (rst,) = peer.tcp(40000, 8123, 100, 4242, F.ACK, b"x")
    assert rst.tcp is not None and (rst.tcp.seq, rst.tcp.ack, rst.tcp.flags) == (4242, 0, F.RST)
    assert peer.tcp(40000, 8123, 100, 4242, F.RST) == []
    assert peer.tcp(40000, 8123, 100, 0, F.PSH, b"nosyn") == []  # neither SYN nor ACK: dropped


def test_ephemeral_ports_wrap_within_the_range() -> None:
    stack = NetStack(FakeNic(), lambda: 0, lambda: 123_456_789)
    lo, hi = stackmod.EPHEMERAL
    assert isinstance(stack.next_port, int) and lo <= stack.next_port < hi
    stack.next_port = hi - 1
    assert stack.ephemeral_port(lambda p: False) == lo
    stack.next_port = hi - 2
    assert stack.ephemeral_port(lambda p: p == hi - 1) == lo


class BatchNic(FakeNic):
    """Hands frames over a few at a time, as a ring is drained in batches."""

    def __init__(self, batches: list[list[bytes]], reenter: NetStack | None = None) -> None:
        super().__init__()
        self.batches = batches
        self.polls = 0
        self.stack = reenter

    def poll(self) -> list[bytes]:
        self.polls += 1
        if self.stack is not None:
            self.stack.poll()  # a re-entrant poll does nothing
        return self.batches.pop(0) if self.batches else []


def test_poll_drains_several_batches_and_does_not_reenter() -> None:
    nic = BatchNic([[ping_frame()], [ping_frame(), ping_frame()], [ping_frame()]])
    stack = NetStack(nic, lambda: 0, lambda: 0)
    stack.configure(GUEST, 24, HOST)
    stack.arp[HOST] = HOST_MAC
    nic.stack = stack
    stack.poll()
    assert stack.stats["echo"] == 4 and len(nic.sent) == 4 and nic.polls == 4


def test_next_deadline_follows_the_tcp_timers(peer: Peer) -> None:
    listener = peer.stack.listen(8123, 4)
    seq, gseq = peer.handshake(8123)
    tcb = listener.ready.popleft()
    assert peer.stack.next_deadline() is None
    peer.tcp(40000, 8123, seq, gseq, F.ACK, b"req")  # a delayed ACK is owed
    assert peer.stack.next_deadline() == peer.now + tcpmod.DELACK_NS
    tcb.send(b"resp")  # carries the ACK; the retransmission timer runs
    peer.take()
    assert peer.stack.next_deadline() == peer.now + tcpmod.RTO_INITIAL
