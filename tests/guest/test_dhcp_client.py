"""The guest's DHCP client (guest/net/dhcp.py) against a scripted server whose replies are
built byte by byte from RFC 2131 §2 Table 1 (op, htype, hlen, hops, xid, secs, flags,
ciaddr, yiaddr, siaddr, giaddr, chaddr[16], sname[64], file[128]), the magic cookie
99.130.83.99 and RFC 2132 options (code, length, data; 255 ends them): what the client
sends in SELECTING state (§4.3.2, §4.4.1), a retry after an OFFER with no address or a NAK,
the lease taken from the ACK; and the interface's configuration (ip= option, DHCP,
kvmtool's defaults) and bring-up on the first NIC."""

from __future__ import annotations

import struct
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from unirealm.arch import net
from unirealm.guest.net import dhcp as dhcpmod
from unirealm.guest.net import virtio_net as virtio_net_mod
from unirealm.guest.net.dhcp import DhcpClient, configure, start_network

from .test_tcpip import GUEST_MAC, HOST_MAC, MS, Peer

COOKIE = bytes([99, 130, 83, 99])
SERVER = bytes([192, 168, 33, 1])
LEASED = bytes([192, 168, 33, 15])
DISCOVER, OFFER, REQUEST, ACK, NAK = 1, 2, 3, 5, 6


def option(code: int, data: bytes) -> bytes:
    return bytes([code, len(data)]) + data


def bootreply(xid: int, chaddr: bytes, yiaddr: bytes, options: bytes, siaddr: bytes = bytes(4)) -> bytes:
    """RFC 2131 §2: op 2 (BOOTREPLY), htype 1 (Ethernet), hlen 6, hops 0."""
    head = bytes([2, 1, 6, 0]) + xid.to_bytes(4, "big") + bytes(2) + b"\x80\x00"
    head += bytes(4) + yiaddr + siaddr + bytes(4)
    head += chaddr.ljust(16, b"\0") + bytes(64) + bytes(128)
    assert len(head) == 236
    return head + COOKIE + options + b"\xff"


class Request:
    """A client's message read by offsets from RFC 2131 §2 and RFC 2132 §2."""

    def __init__(self, raw: bytes) -> None:
        assert len(raw) >= 300  # RFC 1542 §3.1.1: a BOOTP message is at least 300 octets
        self.op, self.htype, self.hlen, self.hops = raw[0], raw[1], raw[2], raw[3]
        self.xid = int.from_bytes(raw[4:8], "big")
        self.flags = int.from_bytes(raw[10:12], "big")
        self.ciaddr, self.yiaddr = raw[12:16], raw[16:20]
        self.chaddr = raw[28:44]
        assert raw[236:240] == COOKIE
        self.options: dict[int, bytes] = {}
        i = 240
        while raw[i] != 255:
            if raw[i] == 0:
                i += 1
                continue
            self.options[raw[i]] = raw[i + 2 : i + 2 + raw[i + 1]]
            i += 2 + raw[i + 1]


Script = Callable[[int, Request], list[bytes]]


class Server:
    """Answers each client message (sent to 255.255.255.255:67 from 0.0.0.0:68) with what
    `script(round, request)` returns; `round` counts that message type's arrivals."""

    def __init__(self, peer: Peer, script: Script) -> None:
        self.peer, self.script = peer, script
        self.seen: list[Request] = []

    def __call__(self, deadline: int | None = None) -> None:
        for frame in list(self.peer.nic.sent):
            f = net.parse_frame(frame)
            assert f.udp is not None and (f.udp.sport, f.udp.dport) == (68, 67)
            assert f.ip is not None and f.ip.src == bytes(4) and f.ip.dst == b"\xff" * 4
            assert f.eth.dst == b"\xff" * 6
            req = Request(bytes(f.payload))
            kind = req.options[53][0]
            n = sum(1 for r in self.seen if r.options[53][0] == kind)
            self.seen.append(req)
            for reply in self.script(n, req):
                self.peer.nic.inbox.append(net.udp_frame(net.BROADCAST_MAC, HOST_MAC, SERVER, net.BROADCAST_IP,
                                                         67, 68, reply))
        self.peer.nic.sent.clear()
        self.peer.now += 50 * MS

    def kinds(self) -> list[int]:
        return [r.options[53][0] for r in self.seen]


def offer_ack(kind: int, req: Request, yiaddr: bytes = LEASED, extra: bytes = b"") -> bytes:
    opts = option(53, bytes([kind])) + option(54, SERVER) + option(51, (3600).to_bytes(4, "big")) + extra
    return bootreply(req.xid, req.chaddr[:6], yiaddr, opts)


def full(kind: int, req: Request) -> bytes:
    return offer_ack(kind, req, extra=option(1, bytes([255, 255, 255, 0])) + option(3, SERVER)
                     + option(6, bytes([8, 8, 8, 8, 1, 1, 1, 1])))


def unconfigured() -> Peer:
    peer = Peer()
    peer.stack.configure(net.ANY_IP, 0, None)
    return peer


def test_selecting_state_messages_and_the_lease() -> None:
    peer = unconfigured()

    def script(n: int, req: Request) -> list[bytes]:
        return [full(OFFER if req.options[53][0] == DISCOVER else ACK, req)]

    server = Server(peer, script)
    lease = DhcpClient(peer.stack, server).run()
    assert lease == (LEASED, 24, SERVER, [bytes([8, 8, 8, 8]), bytes([1, 1, 1, 1])])
    assert server.kinds() == [DISCOVER, REQUEST]
    discover, request = server.seen
    for msg in server.seen:
        assert (msg.op, msg.htype, msg.hlen, msg.hops) == (1, 1, 6, 0)  # BOOTREQUEST over Ethernet
        assert msg.chaddr == GUEST_MAC + bytes(10)
        assert msg.ciaddr == bytes(4)  # §4.3.2 / Table 5: 0 in DISCOVER and a SELECTING REQUEST
        assert msg.flags == 0x8000  # no address yet: the reply must be broadcast (§4.1)
        assert msg.options[61] == b"\x01" + GUEST_MAC  # RFC 2132 §9.14: type 1 (Ethernet) + MAC
        assert {1, 3, 6} <= set(msg.options[55])  # RFC 2132 §9.8: mask, router, DNS asked for
    assert request.xid == discover.xid  # §4.4.1: the same xid through the exchange
    assert 50 not in discover.options
    assert request.options[50] == LEASED  # §4.3.2 SELECTING: 'requested IP address' = yiaddr
    assert request.options[54] == SERVER  # ... and the chosen server's identifier
    assert 68 not in peer.stack.udp_hook  # port 68 released after


def test_server_identifier_falls_back_to_siaddr() -> None:
    peer = unconfigured()
    next_server = bytes([192, 168, 33, 2])

    def script(n: int, req: Request) -> list[bytes]:
        kind = OFFER if req.options[53][0] == DISCOVER else ACK
        return [bootreply(req.xid, req.chaddr[:6], LEASED, option(53, bytes([kind])), siaddr=next_server)]

    server = Server(peer, script)
    assert DhcpClient(peer.stack, server).run() == (LEASED, 24, None, [])
    assert server.seen[1].options[54] == next_server


def test_an_offer_without_an_address_is_followed_by_another_discover() -> None:
    peer = unconfigured()

    def script(n: int, req: Request) -> list[bytes]:
        if req.options[53][0] == DISCOVER:
            return [full(OFFER, req) if n else offer_ack(OFFER, req, yiaddr=bytes(4))]
        return [full(ACK, req)]

    server = Server(peer, script)
    lease = DhcpClient(peer.stack, server).run()
    assert lease is not None and lease[0] == LEASED
    assert server.kinds() == [DISCOVER, DISCOVER, REQUEST]


def test_no_offer_at_all_retries_then_gives_up() -> None:
    peer = unconfigured()
    server = Server(peer, lambda n, req: [])
    assert DhcpClient(peer.stack, server).run() is None
    assert server.kinds() == [DISCOVER] * dhcpmod.TRIES


@pytest.mark.parametrize("first", ["nak", "no-address"])
def test_a_nak_or_an_ack_without_an_address_restarts_at_discover(first: str) -> None:
    """§3.1.5 / §4.4.1: on DHCPNAK the client restarts the configuration process."""
    peer = unconfigured()

    def script(n: int, req: Request) -> list[bytes]:
        if req.options[53][0] == DISCOVER:
            return [full(OFFER, req)]
        if n == 0:
            if first == "nak":
                return [bootreply(req.xid, req.chaddr[:6], bytes(4), option(53, bytes([NAK])) + option(54, SERVER))]
            return [offer_ack(ACK, req, yiaddr=bytes(4))]
        return [full(ACK, req)]

    server = Server(peer, script)
    lease = DhcpClient(peer.stack, server).run()
    assert lease is not None and lease[0] == LEASED
    assert server.kinds() == [DISCOVER, REQUEST, DISCOVER, REQUEST]


def test_without_a_subnet_mask_a_class_c_address_gets_24_bits() -> None:
    """No option 1: the classful default (RFC 791 §2.3: 192.168.33.15 is class C, a 24-bit network)."""
    peer = unconfigured()

    def script(n: int, req: Request) -> list[bytes]:
        return [offer_ack(OFFER if req.options[53][0] == DISCOVER else ACK, req, extra=option(3, SERVER))]

    lease = DhcpClient(peer.stack, Server(peer, script)).run()
    assert lease == (LEASED, 24, SERVER, [])


def test_a_non_contiguous_subnet_mask_falls_back_to_the_class_c_default() -> None:
    """RFC 950 §2.1 recommends contiguous mask bits; 255.0.255.0 names no prefix length."""
    peer = unconfigured()

    def script(n: int, req: Request) -> list[bytes]:
        return [offer_ack(OFFER if req.options[53][0] == DISCOVER else ACK, req,
                          extra=option(1, bytes([255, 0, 255, 0])))]

    lease = DhcpClient(peer.stack, Server(peer, script)).run()
    assert lease is not None and lease[:2] == (LEASED, 24)


def test_a_stack_holding_an_old_address_still_sends_from_zero() -> None:
    """RFC 2131 §4.1: messages a client broadcasts before it has its address carry IP source
    0.0.0.0 (the Server checks every one), whatever address the interface had before."""
    peer = Peer()  # configured with kvmtool's 192.168.33.15/24

    def script(n: int, req: Request) -> list[bytes]:
        return [full(OFFER if req.options[53][0] == DISCOVER else ACK, req)]

    server = Server(peer, script)
    assert DhcpClient(peer.stack, server).run() is not None
    assert server.kinds() == [DISCOVER, REQUEST]


def test_the_subnet_mask_option_gives_the_prefix() -> None:
    peer = unconfigured()

    def script(n: int, req: Request) -> list[bytes]:
        return [offer_ack(OFFER if req.options[53][0] == DISCOVER else ACK, req,
                          extra=option(1, bytes([255, 255, 240, 0])))]

    lease = DhcpClient(peer.stack, Server(peer, script)).run()
    assert lease is not None and lease[1] == 20


def test_replies_for_another_client_or_exchange_are_ignored() -> None:
    peer = unconfigured()

    def script(n: int, req: Request) -> list[bytes]:
        kind = OFFER if req.options[53][0] == DISCOVER else ACK
        other_mac = bytes([2, 0, 0, 0, 0, 9])
        wrong_xid = bootreply(req.xid ^ 1, req.chaddr[:6], bytes([192, 168, 33, 66]), option(53, bytes([kind])))
        wrong_mac = bootreply(req.xid, other_mac, bytes([192, 168, 33, 77]), option(53, bytes([kind])))
        request = bytearray(bootreply(req.xid, req.chaddr[:6], bytes([192, 168, 33, 88]), option(53, bytes([kind]))))
        request[0] = 1  # a BOOTREQUEST (another client's) is not a reply
        return [wrong_xid, wrong_mac, bytes(request), b"\x02" * 100, full(kind, req)]

    lease = DhcpClient(peer.stack, Server(peer, script)).run()
    assert lease is not None and lease[0] == LEASED


# --- configure / start_network ---------------------------------------------------------------------
class RecordingStack:
    def __init__(self) -> None:
        self.configured: list[tuple[Any, ...]] = []

    def configure(self, *args: Any) -> None:
        self.configured.append(args)


def fake_kernel(options: dict[str, str]) -> SimpleNamespace:
    logged: list[str] = []
    return SimpleNamespace(options=options, log=lambda text, **kw: logged.append(text), logged=logged,
                           wait=lambda deadline=None: 0)


def test_the_ip_option_configures_without_dhcp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dhcpmod, "DhcpClient", None)  # would fail if DHCP were tried
    stack = RecordingStack()
    kernel = fake_kernel({"ip": "10.0.2.15/16,10.0.2.2"})
    assert configure(kernel, stack) == "option"
    assert stack.configured == [(bytes([10, 0, 2, 15]), 16, bytes([10, 0, 2, 2]))]


def test_a_bad_ip_option_is_logged_and_dhcp_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    lease = (LEASED, 24, SERVER, [SERVER])
    monkeypatch.setattr(dhcpmod, "DhcpClient", lambda stack, wait: SimpleNamespace(run=lambda: lease))
    stack = RecordingStack()
    kernel = fake_kernel({"ip": "10.0.0/8"})
    assert configure(kernel, stack) == "dhcp"
    assert stack.configured == [lease]
    assert len(kernel.logged) == 1 and "10.0.0/8" in kernel.logged[0]


@pytest.mark.parametrize("options", [{}, {"nodhcp": ""}])
def test_no_lease_or_nodhcp_leaves_kvmtools_defaults(monkeypatch: pytest.MonkeyPatch, options: dict[str, str]) -> None:
    tried: list[bool] = []

    def client(stack: Any, wait: Any) -> Any:
        tried.append(True)
        return SimpleNamespace(run=lambda: None)

    monkeypatch.setattr(dhcpmod, "DhcpClient", client)
    stack = RecordingStack()
    assert configure(fake_kernel(options), stack) == "default"
    assert stack.configured == [(bytes([192, 168, 33, 15]), 24, bytes([192, 168, 33, 1]))]
    assert tried == ([] if "nodhcp" in options else [True])


def test_start_network_brings_up_the_first_nic(monkeypatch: pytest.MonkeyPatch) -> None:
    from .test_virtio_net_driver import MAC, nic_pair

    nic, device, sent, cpu, _ = nic_pair()
    second, _, _, _, _ = nic_pair()
    monkeypatch.setattr(virtio_net_mod, "find_nics", lambda kernel: [nic, second])
    kernel = fake_kernel({"ip": "10.0.2.15/24,10.0.2.2"})
    kernel.cpu, kernel.monotonic_ns = cpu, lambda: 0
    stack = start_network(kernel)
    assert stack is not None and stack.nic is nic and stack.mac == MAC
    assert (stack.ip, stack.prefix, stack.gateway) == (bytes([10, 0, 2, 15]), 24, bytes([10, 0, 2, 2]))
    assert any("10.0.2.15/24" in line and "(option)" in line for line in kernel.logged)
    # Frames go out on that NIC: an ARP request for the gateway.
    stack.send_udp(bytes([10, 0, 2, 2]), 5000, 53, b"q")
    assert len(sent) == 1 and struct.unpack_from("!H", sent[0], 12)[0] == 0x0806
    # A frame in, then the NIC's interrupt: the stack reads it (an ARP request for us is answered).
    device.receive(net.arp_frame(net.ArpOp.REQUEST, HOST_MAC, bytes([10, 0, 2, 2]), net.ZERO_MAC,
                                 bytes([10, 0, 2, 15])))
    device.deliver()
    assert len(sent) == 1
    assert nic.t.on_interrupt is not None
    nic.t.on_interrupt(1)  # VIRTIO_MMIO_INT_VRING
    out = [net.parse_frame(f) for f in sent[1:]]
    # RFC 826: the reply, and the sender's address learnt, so the datagram that waited goes out.
    assert any(f.arp is not None and f.arp.op == net.ArpOp.REPLY and f.arp.spa == bytes([10, 0, 2, 15]) for f in out)
    assert any(f.udp is not None and f.udp.dport == 53 and f.eth.dst == HOST_MAC for f in out)


def test_start_network_without_a_nic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(virtio_net_mod, "find_nics", lambda kernel: [])
    assert start_network(fake_kernel({})) is None

