"""The user-mode network's gateway, in-process: ARP, DHCP, ICMP echo, outbound TCP and UDP to
real host sockets on 127.0.0.1, inbound hostfwd with a scripted guest TCP peer,
retransmission, and malformed frames dropped. Loopback addresses only, bounded loops."""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Callable

import pytest

from unirealm.arch.net import (
    BROADCAST_IP,
    BROADCAST_MAC,
    KVMTOOL_GATEWAY_IP,
    KVMTOOL_GUEST_IP,
    KVMTOOL_GUEST_MAC,
    KVMTOOL_HOST_MAC,
    ArpOp,
    Dhcp,
    DhcpMessageType,
    DhcpOp,
    DhcpOption,
    EtherType,
    IcmpEcho,
    IcmpType,
    IpProto,
    Tcp,
    TcpFlags,
    TcpOptions,
    arp_frame,
    ethernet_frame,
    ip_bytes,
    ipv4_packet,
    parse_frame,
    tcp_frame,
    udp_frame,
)
from unirealm.host.net.usernet import Forward, UserNet, UserNetError

GW, GUEST = KVMTOOL_GATEWAY_IP, KVMTOOL_GUEST_IP
GW_MAC, GUEST_MAC = KVMTOOL_HOST_MAC, KVMTOOL_GUEST_MAC


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Wire:
    """The guest's side of the link: frames the gateway sent, parsed."""

    def __init__(self, forwards=()) -> None:
        self.frames: list[bytes] = []
        self.net = UserNet(self.frames.append, forwards=forwards, nameserver="127.0.0.1")

    def take(self):
        out = [parse_frame(f) for f in self.frames]
        self.frames.clear()
        return out

    def pump(self, until: Callable[[], bool], timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, "timed out"
            self.net.poll(0.01)

    def wait_frames(self, timeout: float = 3.0):
        self.pump(lambda: bool(self.frames), timeout)
        return self.take()


@pytest.fixture
def wire():
    w = Wire()
    yield w
    w.net.close()


class GuestTcp:
    """A scripted guest TCP endpoint (port `lport`) talking to `rip`:`rport` through the gateway."""

    def __init__(self, wire: Wire, lport: int, rip: bytes, rport: int, iss: int = 1000) -> None:
        self.wire, self.lport, self.rip, self.rport = wire, lport, rip, rport
        self.seq, self.ack = iss, 0

    def send(self, flags: int, payload: bytes = b"", seq: int | None = None, window: int = 65535,
             options: TcpOptions | None = None) -> None:
        tcp = Tcp(self.lport, self.rport, self.seq if seq is None else seq, self.ack, flags, window,
                  options or TcpOptions())
        self.wire.net.input(tcp_frame(GW_MAC, GUEST_MAC, GUEST, self.rip, tcp, payload))
        if seq is None:
            self.seq = (self.seq + len(payload) + bool(flags & (TcpFlags.SYN | TcpFlags.FIN))) & 0xFFFF_FFFF

    def segments(self, timeout: float = 3.0):
        out = []
        for pf in self.wire.wait_frames(timeout):
            assert pf.tcp is not None and pf.ip.src == self.rip and pf.ip.dst == GUEST
            assert pf.eth.dst == GUEST_MAC and pf.eth.src == GW_MAC
            assert (pf.tcp.sport, pf.tcp.dport) == (self.rport, self.lport)
            out.append((pf.tcp, pf.payload))
        return out

    def receive(self, want: int, timeout: float = 3.0) -> bytes:
        """Data segments until `want` bytes, each ACKed."""
        data = b""
        deadline = time.monotonic() + timeout
        while len(data) < want:
            for tcp, payload in self.segments(max(0.01, deadline - time.monotonic())):
                if payload and tcp.seq == self.ack:
                    data += payload
                    self.ack = (self.ack + len(payload)) & 0xFFFF_FFFF
            self.send(TcpFlags.ACK)
        return data


# --- link layer and the gateway's own services --------------------------------------------------

def test_arp_for_the_gateway_only(wire):
    wire.net.input(arp_frame(ArpOp.REQUEST, GUEST_MAC, GUEST, bytes(6), GW))
    (pf,) = wire.take()
    assert pf.eth.dst == GUEST_MAC and pf.eth.src == GW_MAC
    assert pf.arp.op == ArpOp.REPLY and pf.arp.sha == GW_MAC and pf.arp.spa == GW
    assert pf.arp.tha == GUEST_MAC and pf.arp.tpa == GUEST
    wire.net.input(arp_frame(ArpOp.REQUEST, GUEST_MAC, GUEST, bytes(6), ip_bytes("192.168.33.77")))
    wire.net.input(arp_frame(ArpOp.REPLY, GUEST_MAC, GUEST, GW_MAC, GW))
    assert wire.take() == []


def test_icmp_echo_to_the_gateway(wire):
    echo = IcmpEcho(IcmpType.ECHO_REQUEST, 0x1234, 7, b"ping" * 10).pack()
    wire.net.input(ethernet_frame(GW_MAC, GUEST_MAC, EtherType.IPV4, ipv4_packet(GUEST, GW, IpProto.ICMP, echo)))
    (pf,) = wire.take()
    assert pf.ip.src == GW and pf.ip.dst == GUEST
    assert pf.icmp.type == IcmpType.ECHO_REPLY and (pf.icmp.ident, pf.icmp.seq) == (0x1234, 7)
    assert pf.icmp.data == b"ping" * 10


def dhcp_request(kind: int, **options: bytes) -> bytes:
    opts = {DhcpOption.MESSAGE_TYPE: bytes((kind,))}
    opts.update({int(DhcpOption[k.upper()]): v for k, v in options.items()})
    msg = Dhcp(DhcpOp.BOOTREQUEST, 0xCAFE, GUEST_MAC, options=opts)
    return udp_frame(BROADCAST_MAC, GUEST_MAC, bytes(4), BROADCAST_IP, 68, 67, msg.pack())


def test_dhcp_discover_offer_request_ack(wire):
    wire.net.input(dhcp_request(DhcpMessageType.DISCOVER))
    (pf,) = wire.take()
    assert (pf.udp.sport, pf.udp.dport) == (67, 68) and pf.ip.src == GW
    offer = Dhcp.parse(pf.payload)
    assert offer.op == DhcpOp.BOOTREPLY and offer.xid == 0xCAFE and offer.chaddr == GUEST_MAC
    assert offer.message_type == DhcpMessageType.OFFER and offer.yiaddr == GUEST
    assert offer.ip_option(DhcpOption.SUBNET_MASK) == ip_bytes("255.255.255.0")
    assert offer.ip_option(DhcpOption.ROUTER) == GW and offer.ip_option(DhcpOption.DNS) == GW
    assert offer.ip_option(DhcpOption.SERVER_ID) == GW and offer.u32_option(DhcpOption.LEASE_TIME)
    wire.net.input(dhcp_request(DhcpMessageType.REQUEST, requested_ip=GUEST, server_id=GW))
    (pf,) = wire.take()
    ack = Dhcp.parse(pf.payload)
    assert ack.message_type == DhcpMessageType.ACK and ack.yiaddr == GUEST
    wire.net.input(dhcp_request(DhcpMessageType.REQUEST, requested_ip=ip_bytes("192.168.33.99")))
    (pf,) = wire.take()
    assert Dhcp.parse(pf.payload).message_type == DhcpMessageType.NAK
    wire.net.input(dhcp_request(DhcpMessageType.REQUEST, requested_ip=GUEST, server_id=ip_bytes("10.0.0.1")))
    assert wire.take() == []  # the client chose another server


def test_malformed_frames_are_dropped(wire):
    good_syn = tcp_frame(GW_MAC, GUEST_MAC, GUEST, GW, Tcp(4000, 9, 1, 0, TcpFlags.SYN, 1000))
    bad = [
        b"",
        b"\x00" * 5,
        os.urandom(60),
        ethernet_frame(GW_MAC, GUEST_MAC, EtherType.IPV4, b"\x45\x00\x00"),  # short IPv4
        good_syn[:20],  # cut inside the IP header
        good_syn[:-1] + bytes([good_syn[-1] ^ 0xFF]),  # bad TCP checksum
        good_syn[:24] + b"\x00\x00" + good_syn[26:],  # bad IP header checksum
        ethernet_frame(GW_MAC, GUEST_MAC, EtherType.ARP, b"\x00\x01\x08\x00\x06"),  # short ARP
        ethernet_frame(GW_MAC, GUEST_MAC, EtherType.IPV6, bytes(40)),
        udp_frame(BROADCAST_MAC, GUEST_MAC, bytes(4), BROADCAST_IP, 68, 67, b"\x01" * 50),  # short DHCP
        # TCP with a truncated option (data offset 6, option kind 2 length 9)
        ethernet_frame(GW_MAC, GUEST_MAC, EtherType.IPV4, ipv4_packet(GUEST, GW, IpProto.TCP,
                       struct.pack("!HHIIBBHHH", 1, 2, 0, 0, 0x60, 2, 0, 0, 0) + b"\x02\x09\x00\x00")),
        # not for the gateway's MAC; from a multicast source; spoofed source address
        tcp_frame(b"\x02\x99" * 3, GUEST_MAC, GUEST, GW, Tcp(4000, 9, 1, 0, TcpFlags.SYN, 1000)),
        tcp_frame(GW_MAC, b"\x01" * 6, GUEST, GW, Tcp(4000, 9, 1, 0, TcpFlags.SYN, 1000)),
        tcp_frame(GW_MAC, GUEST_MAC, ip_bytes("10.9.9.9"), GW, Tcp(4000, 9, 1, 0, TcpFlags.SYN, 1000)),
    ]
    for _ in range(50):
        raw = bytearray(good_syn)
        raw[os.urandom(1)[0] % len(raw)] ^= 1 << (os.urandom(1)[0] % 8)
        bad.append(bytes(raw))
    before = wire.net.dropped
    for frame in bad:
        wire.net.input(frame)
    wire.net.poll(0)
    assert wire.net.dropped - before >= 14
    # nothing connected anywhere: a corrupted SYN that still parses would be refused with an RST
    assert all(pf.tcp is not None and pf.tcp.flags & TcpFlags.RST for pf in wire.take())
    assert not wire.net.tcp


# --- outbound TCP and UDP -----------------------------------------------------------------------

def test_outbound_tcp_is_proxied_to_a_host_socket(wire):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(3)
    port = server.getsockname()[1]
    try:
        g = GuestTcp(wire, 40000, GW, port)  # the gateway's address is the host's 127.0.0.1
        g.send(TcpFlags.SYN, options=TcpOptions(mss=1460))
        ((synack, _),) = g.segments()
        assert synack.flags == TcpFlags.SYN | TcpFlags.ACK and synack.ack == 1001
        assert synack.options.mss == 1460
        g.ack = (synack.seq + 1) & 0xFFFF_FFFF
        g.send(TcpFlags.ACK)
        conn, _ = server.accept()
        conn.settimeout(3)
        g.send(TcpFlags.ACK | TcpFlags.PSH, b"hello from the guest")
        ((ack, _),) = g.segments()
        assert ack.ack == g.seq
        assert conn.recv(100) == b"hello from the guest"
        big = os.urandom(50_000)  # more than one window's worth of segments
        conn.sendall(big)
        assert g.receive(len(big)) == big
        conn.close()
        (fin, _), *_ = g.segments()
        assert fin.flags & TcpFlags.FIN and fin.seq == g.ack
        g.ack += 1
        g.send(TcpFlags.FIN | TcpFlags.ACK)
        wire.pump(lambda: not wire.net.tcp or all(c.state == "LINGER" for c in wire.net.tcp.values()))
    finally:
        server.close()


def test_outbound_tcp_to_a_closed_port_is_reset(wire):
    port = free_port()
    g = GuestTcp(wire, 40001, GW, port)
    g.send(TcpFlags.SYN)
    ((rst, _),) = g.segments()
    assert rst.flags & TcpFlags.RST and rst.ack == g.seq
    assert not wire.net.tcp


def test_segment_for_no_connection_is_reset(wire):
    g = GuestTcp(wire, 40002, GW, 9)
    g.send(TcpFlags.ACK, b"stray", seq=5000)
    ((rst, _),) = g.segments()
    assert rst.flags == TcpFlags.RST and rst.seq == 0  # the stray segment's ACK field


def test_outbound_udp_is_proxied(wire):
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(3)
    port = server.getsockname()[1]
    try:
        wire.net.input(udp_frame(GW_MAC, GUEST_MAC, GUEST, GW, 5353, port, b"question"))
        data, addr = server.recvfrom(100)
        assert data == b"question"
        server.sendto(b"answer", addr)
        (pf,) = wire.wait_frames()
        assert pf.ip.src == GW and pf.ip.dst == GUEST
        assert (pf.udp.sport, pf.udp.dport) == (port, 5353) and pf.payload == b"answer"
    finally:
        server.close()


# --- inbound port forwarding ----------------------------------------------------------------------

@pytest.fixture
def forwarded():
    port = free_port()
    w = Wire(forwards=[Forward("127.0.0.1", port, 8123)])
    yield w, port
    w.net.close()


def accept_syn(w: Wire):
    """The gateway's SYN towards guest port 8123: a GuestTcp answering it."""
    (pf,) = w.wait_frames()
    syn = pf.tcp
    assert syn.flags == TcpFlags.SYN and syn.dport == 8123 and pf.ip.src == GW and pf.ip.dst == GUEST
    assert syn.options.mss == 1460
    g = GuestTcp(w, 8123, GW, syn.sport, iss=70000)
    g.ack = (syn.seq + 1) & 0xFFFF_FFFF
    return g, syn


def test_hostfwd_relays_both_ways(forwarded):
    w, port = forwarded
    client = socket.create_connection(("127.0.0.1", port), timeout=3)
    try:
        g, _ = accept_syn(w)
        g.send(TcpFlags.SYN | TcpFlags.ACK, options=TcpOptions(mss=1460))
        ((ack, _),) = g.segments()
        assert ack.flags == TcpFlags.ACK and ack.ack == g.seq
        client.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert g.receive(18) == b"GET / HTTP/1.0\r\n\r\n"
        reply = b"HTTP/1.0 200 OK\r\n\r\nHello, World!\n"
        g.send(TcpFlags.ACK | TcpFlags.PSH, reply)
        g.send(TcpFlags.FIN | TcpFlags.ACK)
        got = b""
        while chunk := client.recv(1000):
            got += chunk
            w.net.poll(0)
        assert got == reply
        # the host client closes: a FIN to the guest, which acknowledges it
        client.close()
        segs = []
        w.pump(lambda: bool(segs.extend(g.segments()) or any(t.flags & TcpFlags.FIN for t, _ in segs)))
        g.ack += 1
        g.send(TcpFlags.ACK)
        w.pump(lambda: all(c.state == "LINGER" for c in w.net.tcp.values()))
    finally:
        client.close()


def test_hostfwd_guest_refuses(forwarded):
    w, port = forwarded
    client = socket.create_connection(("127.0.0.1", port), timeout=3)
    try:
        g, _syn = accept_syn(w)
        g.send(TcpFlags.RST | TcpFlags.ACK, seq=0)
        w.net.poll(0)
        assert not w.net.tcp
        with pytest.raises((ConnectionResetError, ConnectionAbortedError)):
            if client.recv(10) == b"":  # some kernels report the reset as end of file
                raise ConnectionResetError
    finally:
        client.close()


def test_hostfwd_syn_and_data_are_retransmitted(forwarded):
    w, port = forwarded
    client = socket.create_connection(("127.0.0.1", port), timeout=3)
    try:
        g, syn = accept_syn(w)
        (pf,) = w.wait_frames(timeout=1.0)  # not answered: sent again after the timeout
        assert pf.tcp.flags == TcpFlags.SYN and pf.tcp.seq == syn.seq
        g.send(TcpFlags.SYN | TcpFlags.ACK)
        g.segments()
        client.sendall(b"lost once")
        ((data, payload),) = g.segments()
        assert payload == b"lost once"
        ((again, payload2),) = g.segments(timeout=2.0)  # no ACK: the same bytes again
        assert again.seq == data.seq and payload2 == b"lost once"
        g.ack += len(payload2)
        g.send(TcpFlags.ACK)
        w.net.poll(0.3)
        assert w.take() == []  # acknowledged: nothing more
    finally:
        client.close()


def test_hostfwd_zero_window_is_probed(forwarded):
    w, port = forwarded
    client = socket.create_connection(("127.0.0.1", port), timeout=3)
    try:
        g, _ = accept_syn(w)
        g.send(TcpFlags.SYN | TcpFlags.ACK, window=0)
        g.segments()
        client.sendall(b"abc")
        ((probe, payload),) = g.segments(timeout=2.0)
        assert payload == b"a" and probe.seq == g.ack  # one byte into the closed window
        g.ack += 1
        g.send(TcpFlags.ACK, window=1000)
        assert g.receive(2) == b"bc"
    finally:
        client.close()


def test_hostfwd_refuses_non_loopback_addresses():
    with pytest.raises(UserNetError, match="not a loopback address"):
        UserNet(lambda f: None, forwards=[Forward("0.0.0.0", free_port(), 80)])
    port = free_port()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))
    blocker.listen(1)
    try:
        with pytest.raises(UserNetError, match=f"127.0.0.1:{port}"):
            UserNet(lambda f: None, forwards=[Forward("127.0.0.1", port, 80)])
    finally:
        blocker.close()
