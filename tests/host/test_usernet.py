"""The user-mode network on libslirp, in-process: ARP, DHCP (the lease the guest sees), ICMP
echo, outbound TCP and UDP to real host sockets on 127.0.0.1 through the gateway's address,
inbound hostfwd with a scripted guest TCP peer, malformed frames, and the set-up errors.
Loopback addresses only, bounded loops."""

from __future__ import annotations

import ctypes
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
from unirealm.host.net import libslirp, usernet
from unirealm.host.net.usernet import Forward, UserNet, UserNetError, dns_ip

GW, GUEST = KVMTOOL_GATEWAY_IP, KVMTOOL_GUEST_IP
GUEST_MAC = KVMTOOL_GUEST_MAC
GW_MAC = b"\x52\x55" + GW  # libslirp's address for its virtual hosts: 52:55 and the IPv4 address
DNS = ip_bytes("192.168.33.3")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Wire:
    """The guest's side of the link: frames the network sent, parsed."""

    def __init__(self, forwards=()) -> None:
        self.frames: list[bytes] = []
        self.net = UserNet(self.frames.append, forwards=forwards)

    def introduce(self) -> None:
        """The guest ARPs for its gateway, as the guest stack does before its first packet:
        the network learns the guest's MAC from it."""
        self.net.input(arp_frame(ArpOp.REQUEST, GUEST_MAC, GUEST, bytes(6), GW))
        self.take()

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

    def receive(self, want: int, timeout: float = 5.0) -> tuple[bytes, list[Tcp]]:
        """Data segments until `want` bytes, each ACKed; also every segment seen."""
        data, seen = b"", []
        deadline = time.monotonic() + timeout
        while len(data) < want:
            for tcp, payload in self.segments(max(0.01, deadline - time.monotonic())):
                seen.append(tcp)
                if payload and tcp.seq == self.ack:
                    data += payload
                    self.ack = (self.ack + len(payload)) & 0xFFFF_FFFF
            self.send(TcpFlags.ACK)
        return data, seen


# --- link layer and the gateway's own services --------------------------------------------------

def test_arp_for_the_gateway_and_dns_only(wire):
    wire.net.input(arp_frame(ArpOp.REQUEST, GUEST_MAC, GUEST, bytes(6), GW))
    (pf,) = wire.take()
    assert pf.eth.dst == GUEST_MAC and pf.eth.src == GW_MAC
    assert pf.arp.op == ArpOp.REPLY and pf.arp.sha == GW_MAC and pf.arp.spa == GW
    assert pf.arp.tha == GUEST_MAC and pf.arp.tpa == GUEST
    wire.net.input(arp_frame(ArpOp.REQUEST, GUEST_MAC, GUEST, bytes(6), DNS))
    (pf,) = wire.take()
    assert pf.arp.spa == DNS
    wire.net.input(arp_frame(ArpOp.REQUEST, GUEST_MAC, GUEST, bytes(6), ip_bytes("192.168.33.77")))
    assert wire.take() == []


def test_icmp_echo_to_the_gateway(wire):
    wire.introduce()
    echo = IcmpEcho(IcmpType.ECHO_REQUEST, 0x1234, 7, b"ping" * 10).pack()
    wire.net.input(ethernet_frame(GW_MAC, GUEST_MAC, EtherType.IPV4, ipv4_packet(GUEST, GW, IpProto.ICMP, echo)))
    (pf,) = wire.wait_frames()
    assert pf.ip.src == GW and pf.ip.dst == GUEST
    assert pf.icmp.type == IcmpType.ECHO_REPLY and (pf.icmp.ident, pf.icmp.seq) == (0x1234, 7)
    assert pf.icmp.data == b"ping" * 10


def dhcp_request(kind: int, **options: bytes) -> bytes:
    opts = {DhcpOption.MESSAGE_TYPE: bytes((kind,))}
    opts.update({int(DhcpOption[k.upper()]): v for k, v in options.items()})
    msg = Dhcp(DhcpOp.BOOTREQUEST, 0xCAFE, GUEST_MAC, options=opts)
    return udp_frame(BROADCAST_MAC, GUEST_MAC, bytes(4), BROADCAST_IP, 68, 67, msg.pack())


def test_dhcp_hands_out_guest_ip_with_the_gateway_as_router(wire):
    wire.net.input(dhcp_request(DhcpMessageType.DISCOVER))
    (pf,) = wire.take()
    assert (pf.udp.sport, pf.udp.dport) == (67, 68) and pf.ip.src == GW
    offer = Dhcp.parse(pf.payload)
    assert offer.op == DhcpOp.BOOTREPLY and offer.xid == 0xCAFE and offer.chaddr[:6] == GUEST_MAC
    assert offer.message_type == DhcpMessageType.OFFER and offer.yiaddr == GUEST
    assert offer.ip_option(DhcpOption.SUBNET_MASK) == ip_bytes("255.255.255.0")
    assert offer.ip_option(DhcpOption.ROUTER) == GW and offer.ip_option(DhcpOption.DNS) == DNS
    assert offer.ip_option(DhcpOption.SERVER_ID) == GW and offer.u32_option(DhcpOption.LEASE_TIME)
    wire.net.input(dhcp_request(DhcpMessageType.REQUEST, requested_ip=GUEST, server_id=GW))
    (pf,) = wire.take()
    ack = Dhcp.parse(pf.payload)
    assert ack.message_type == DhcpMessageType.ACK and ack.yiaddr == GUEST
    wire.net.input(dhcp_request(DhcpMessageType.REQUEST, requested_ip=ip_bytes("192.168.33.99")))
    (pf,) = wire.take()
    assert Dhcp.parse(pf.payload).message_type == DhcpMessageType.NAK  # outside the pool


def test_dhcp_lease_follows_the_nic_options():
    frames: list[bytes] = []
    guest, gw = ip_bytes("10.7.0.20"), ip_bytes("10.7.0.3")
    net = UserNet(frames.append, guest_ip=guest, gateway_ip=gw)
    try:
        assert net.dns_ip == ip_bytes("10.7.0.4")  # .3 is the gateway: the next free address
        net.input(dhcp_request(DhcpMessageType.DISCOVER))
        offer = Dhcp.parse(parse_frame(frames[0]).payload)
        assert offer.yiaddr == guest and offer.ip_option(DhcpOption.ROUTER) == gw
        assert offer.ip_option(DhcpOption.DNS) == net.dns_ip
    finally:
        net.close()


def test_dns_address_is_never_the_guest_or_gateway():
    assert dns_ip(GUEST, GW) == DNS
    assert dns_ip(ip_bytes("192.168.33.3"), GW) == ip_bytes("192.168.33.4")
    assert dns_ip(ip_bytes("192.168.33.4"), ip_bytes("192.168.33.3")) == ip_bytes("192.168.33.5")


def test_malformed_frames_are_dropped_and_the_network_keeps_working(wire):
    wire.introduce()
    good_syn = tcp_frame(GW_MAC, GUEST_MAC, GUEST, GW, Tcp(4000, 9, 1, 0, TcpFlags.SYN, 1000))
    bad = [
        b"",
        b"\x00" * 5,
        os.urandom(60),
        ethernet_frame(GW_MAC, GUEST_MAC, EtherType.IPV4, b"\x45\x00\x00"),  # short IPv4
        good_syn[:20],  # cut inside the IP header
        good_syn[:-1] + bytes([good_syn[-1] ^ 0xFF]),  # bad TCP checksum
        good_syn[:24] + b"\x00\x00" + good_syn[26:],  # bad IP header checksum
        good_syn[:16] + b"\xff\xff" + good_syn[18:],  # IP total length past the frame
        ethernet_frame(GW_MAC, GUEST_MAC, EtherType.ARP, b"\x00\x01\x08\x00\x06"),  # short ARP
        ethernet_frame(GW_MAC, GUEST_MAC, EtherType.IPV6, bytes(40)),  # no IPv6 here
        udp_frame(BROADCAST_MAC, GUEST_MAC, bytes(4), BROADCAST_IP, 68, 67, b"\x01" * 50),  # short DHCP
        ethernet_frame(GW_MAC, GUEST_MAC, EtherType.IPV4, ipv4_packet(GUEST, GW, IpProto.TCP,
                       struct.pack("!HHIIBBHHH", 1, 2, 0, 0, 0x60, 2, 0, 0, 0) + b"\x02\x09\x00\x00")),
    ]
    for _ in range(300):
        raw = bytearray(good_syn)
        raw[os.urandom(1)[0] % len(raw)] ^= 1 << (os.urandom(1)[0] % 8)
        bad.append(bytes(raw))
        bad.append(os.urandom(os.urandom(1)[0] + 14))
    for frame in bad:
        wire.net.input(frame)
    wire.net.poll(0)
    for pf in wire.take():  # whatever still parsed as a SYN to port 9 is refused
        assert pf.tcp is None or pf.tcp.flags & TcpFlags.RST
    wire.net.input(arp_frame(ArpOp.REQUEST, GUEST_MAC, GUEST, bytes(6), GW))
    (pf,) = wire.take()
    assert pf.arp.op == ArpOp.REPLY


# --- outbound TCP and UDP -----------------------------------------------------------------------

def test_outbound_tcp_to_the_gateway_reaches_host_loopback(wire):
    wire.introduce()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(3)
    port = server.getsockname()[1]
    try:
        g = GuestTcp(wire, 40000, GW, port)
        g.send(TcpFlags.SYN, options=TcpOptions(mss=1460))
        conn, _ = server.accept()
        conn.settimeout(3)
        ((synack, _),) = g.segments()
        assert synack.flags == TcpFlags.SYN | TcpFlags.ACK and synack.ack == 1001
        assert synack.options.mss is not None
        g.ack = (synack.seq + 1) & 0xFFFF_FFFF
        g.send(TcpFlags.ACK)
        g.send(TcpFlags.ACK | TcpFlags.PSH, b"hello from the guest")
        wire.net.poll(0.05)
        assert conn.recv(100) == b"hello from the guest"
        big = os.urandom(200_000)  # more than one window's worth of segments
        conn.sendall(big)
        data, _ = g.receive(len(big))
        assert data == big
        conn.close()
        fins: list = []
        wire.pump(lambda: bool(fins.extend(t for t, _ in g.segments() if t.flags & TcpFlags.FIN) or fins))
        assert fins[0].seq == g.ack
    finally:
        server.close()


def test_outbound_tcp_to_a_closed_port_is_reset(wire):
    wire.introduce()
    g = GuestTcp(wire, 40001, GW, free_port())
    g.send(TcpFlags.SYN)
    segs: list = []
    wire.pump(lambda: bool(segs.extend(g.segments()) or segs))
    ((rst, _),) = segs
    assert rst.flags & TcpFlags.RST and rst.ack == g.seq


def test_outbound_udp_through_the_gateway(wire):
    wire.introduce()
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
    w.introduce()
    yield w, port
    w.net.close()


def accept_syn(w: Wire):
    """The network's SYN towards guest port 8123: a GuestTcp answering it."""
    (pf,) = w.wait_frames()
    syn = pf.tcp
    assert syn.flags == TcpFlags.SYN and syn.dport == 8123 and pf.ip.src == GW and pf.ip.dst == GUEST
    g = GuestTcp(w, 8123, GW, syn.sport, iss=70000)
    g.ack = (syn.seq + 1) & 0xFFFF_FFFF
    return g, syn


def test_hostfwd_relays_both_ways(forwarded):
    w, port = forwarded
    client = socket.create_connection(("127.0.0.1", port), timeout=3)
    try:
        g, _ = accept_syn(w)
        g.send(TcpFlags.SYN | TcpFlags.ACK, options=TcpOptions(mss=1460))
        client.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data, _ = g.receive(18)
        assert data == b"GET / HTTP/1.0\r\n\r\n"
        reply = b"HTTP/1.0 200 OK\r\n\r\nHello, World!\n"
        g.send(TcpFlags.ACK | TcpFlags.PSH, reply)
        g.send(TcpFlags.FIN | TcpFlags.ACK)
        got = b""
        client.settimeout(0.05)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            w.net.poll(0.01)
            try:
                chunk = client.recv(1000)
            except TimeoutError:
                continue
            if not chunk:
                break
            got += chunk
        assert got == reply
    finally:
        client.close()


def test_hostfwd_guest_refuses(forwarded):
    w, port = forwarded
    client = socket.create_connection(("127.0.0.1", port), timeout=3)
    try:
        g, _syn = accept_syn(w)
        g.send(TcpFlags.RST | TcpFlags.ACK, seq=0)
        client.settimeout(0.05)
        deadline = time.monotonic() + 3
        with pytest.raises((ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
            while time.monotonic() < deadline:
                w.net.poll(0.01)
                try:
                    if client.recv(10) == b"":  # some kernels report the reset as end of file
                        raise ConnectionResetError
                except TimeoutError:
                    continue
    finally:
        client.close()


def test_hostfwd_refuses_non_loopback_addresses_and_taken_ports():
    with pytest.raises(UserNetError, match="not a loopback address"):
        UserNet(lambda f: None, forwards=[Forward("0.0.0.0", free_port(), 80)])
    port = free_port()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))
    blocker.listen(1)
    try:
        with pytest.raises(UserNetError, match=f"127.0.0.1:{port}: Address already in use"):
            UserNet(lambda f: None, forwards=[Forward("127.0.0.1", port, 80)])
    finally:
        blocker.close()


def test_missing_libslirp_is_one_line(monkeypatch):
    monkeypatch.setattr(libslirp, "_lib", None)
    monkeypatch.setattr(libslirp.ctypes.util, "find_library", lambda name: "libslirp-not-there.so.0")
    with pytest.raises(UserNetError, match=r"needs libslirp \(Debian package libslirp0\)"):
        usernet.UserNet(lambda f: None)


def test_struct_layouts_match_libslirp_h():
    # offsets from libslirp.h 4.7 on an LP64 ABI (x86-64, AArch64)
    c = libslirp.SlirpConfig
    assert (c.vnetwork.offset, c.vhost.offset, c.in6_enabled.offset, c.vprefix_addr6.offset) == (12, 20, 24, 28)
    assert (c.vprefix_len.offset, c.vhost6.offset, c.vhostname.offset, c.vdhcp_start.offset) == (44, 48, 64, 96)
    assert (c.vnameserver6.offset, c.vdnssearch.offset, c.if_mtu.offset) == (104, 120, 136)
    assert (c.disable_host_loopback.offset, c.outbound_addr.offset, c.disable_dns.offset) == (152, 160, 176)
    assert ctypes.sizeof(c) == 184 and ctypes.sizeof(libslirp.SlirpCb) == 11 * 8



def test_hostfwd_takes_a_burst_of_clients_before_the_vmm_polls():
    """A forwarded port's accept queue holds a burst of clients (libslirp's own backlog of 1
    would leave the third connect waiting out SYN retransmissions until the next poll)."""
    import socket

    port = free_port()
    net = UserNet(lambda f: None, forwards=[Forward("127.0.0.1", port, 80)])
    clients = []
    try:
        for _ in range(16):  # no poll in between: nothing accepts them yet
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=0.5))
    finally:
        for c in clients:
            c.close()
        net.close()
    assert len(clients) == 16
