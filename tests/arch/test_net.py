"""arch.net against bytes from independent sources: the RFC 1071 §3 worked example, the
well-known IPv4 header with checksum 0xb861, and frames the Linux kernel emitted on a tap
device (ARP request, TCP SYN with MSS/SACK-permitted/timestamps/window scale, UDP) typed
in as hex; address conversions against socket.inet_aton and ipaddress."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct

import pytest

from unirealm.arch import net

# Captured from Linux 6.x on a tap device at 02:01:01:01:01:01 / 192.168.33.1 talking to
# 192.168.33.15 (MAC 02:15:15:15:15:15): a broadcast ARP request, the SYN of connect() to
# port 8123 and a sendto() of b"hello udp" to port 5353. The kernel computed every checksum.
ARP_REQUEST = bytes.fromhex(
    "ffffffffffff02010101010108060001080006040001020101010101c0a82101000000000000c0a8210f"
)
TCP_SYN = bytes.fromhex(
    "02151515151502010101010108004500003ce046400040069714c0a82101c0a8210fb0dc1fbbac48d9fb"
    "00000000a002faf011f40000020405b40402080a7d78a362000000000103030a"
)
UDP_HELLO = bytes.fromhex(
    "0215151515150201010101010800450000257c8740004011fadfc0a82101c0a8210f967714e9001167b368656c6c6f20756470"
)
# Echo request and the kernel's echo reply captured on loopback (ICMP checksums in software).
ICMP_REQUEST_IP = bytes.fromhex("4500001c2e56400040010e897f0000017f0000010800f7fd00010001")
ICMP_REPLY_IP = bytes.fromhex("4500001c2e57000040014e887f0000017f0000010000fffd00010001")
HOST = net.ip_bytes("192.168.33.1")
GUEST = net.ip_bytes("192.168.33.15")


def test_rfc1071_example():
    # RFC 1071 §3 "Numerical Examples": the folded sum of 00 01 f2 03 f4 f5 f6 f7 is ddf2.
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert net.checksum_partial(data) == 0xDDF2
    assert net.checksum(data) == 0x220D
    assert net.checksum(data + struct.pack("!H", 0x220D)) == 0
    assert net.checksum(b"\x01") == ~0x0100 & 0xFFFF  # odd length: padded with a zero byte


def test_ipv4_header_wellknown():
    # The IPv4 header example with checksum 0xb861 (192.168.0.1 -> 192.168.0.199, UDP).
    raw = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert net.checksum(raw) == 0xB861
    hdr = net.IPv4(
        net.ip_bytes("192.168.0.1"), net.ip_bytes("192.168.0.199"), net.IpProto.UDP, 0x73, 0, 0x4000, 64
    )
    assert hdr.pack() == raw[:10] + b"\xb8\x61" + raw[12:]


def test_addresses_against_stdlib():
    for text in ("192.168.33.15", "0.0.0.0", "255.255.255.255", "10.0.2.2"):
        assert net.ip_bytes(text) == socket.inet_aton(text) == ipaddress.IPv4Address(text).packed
        assert net.ip_str(socket.inet_aton(text)) == text
        assert net.ip_int(net.ip_bytes(text)) == int(ipaddress.IPv4Address(text))
    for prefix in (0, 8, 24, 30, 32):
        mask = ipaddress.IPv4Network(f"0.0.0.0/{prefix}").netmask.packed
        assert net.prefix_mask(prefix) == mask
        assert net.mask_prefix(mask) == prefix
    with pytest.raises(ValueError):
        net.mask_prefix(net.ip_bytes("255.0.255.0"))
    with pytest.raises(ValueError):
        net.ip_bytes("1.2.3.256")
    assert net.mac_bytes("02:15:15:15:15:15") == net.KVMTOOL_GUEST_MAC == bytes.fromhex("021515151515")
    assert net.mac_str(net.KVMTOOL_HOST_MAC) == "02:01:01:01:01:01"


def test_arp_captured():
    f = net.parse_frame(ARP_REQUEST)
    assert f.eth.dst == net.BROADCAST_MAC and f.eth.ethertype == net.EtherType.ARP
    assert f.arp == net.Arp(net.ArpOp.REQUEST, net.KVMTOOL_HOST_MAC, HOST, net.ZERO_MAC, GUEST)
    assert net.arp_frame(net.ArpOp.REQUEST, net.KVMTOOL_HOST_MAC, HOST, net.ZERO_MAC, GUEST) == ARP_REQUEST
    with pytest.raises(net.NetParseError):
        net.Arp.parse(ARP_REQUEST[14:30])


def test_tcp_syn_captured():
    f = net.parse_frame(TCP_SYN)
    assert f.ip is not None and f.tcp is not None
    assert (f.ip.src, f.ip.dst, f.ip.ttl, f.ip.ident) == (HOST, GUEST, 64, 0xE046)
    assert not f.ip.is_fragment
    t = f.tcp
    assert (t.sport, t.dport, t.seq, t.ack) == (0xB0DC, 8123, 0xAC48D9FB, 0)
    assert t.flags == net.TcpFlags.SYN and t.window == 0xFAF0 and t.header_length == 40
    assert t.options.mss == 1460 and t.options.sack_permitted and t.options.wscale == 10
    assert t.options.timestamp == (0x7D78A362, 0)
    # Re-packing from the parsed fields (options in Linux's order) gives the kernel's bytes.
    frame = net.tcp_frame(net.KVMTOOL_GUEST_MAC, net.KVMTOOL_HOST_MAC, HOST, GUEST, t, ident=f.ip.ident)
    assert frame == TCP_SYN
    # A flipped payload bit fails the checksum.
    bad = bytearray(TCP_SYN)
    bad[-1] ^= 1
    with pytest.raises(net.NetParseError):
        net.parse_frame(bytes(bad))


def test_tcp_options_pack_roundtrip():
    opts = net.TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(1, 2), sack_blocks=((5, 9),))
    raw = opts.pack()
    assert len(raw) % 4 == 0
    assert net.TcpOptions.parse(raw) == opts
    assert net.TcpOptions.parse(b"\x01\x01\x00\x02\x04") == net.TcpOptions()  # after EOL: ignored
    for bad in (b"\x02", b"\x02\x01", b"\x02\x08\x00\x00"):
        with pytest.raises(net.NetParseError):
            net.TcpOptions.parse(bad)


def test_udp_captured():
    f = net.parse_frame(UDP_HELLO)
    assert f.udp == net.Udp(0x9677, 5353, 17, 0x67B3)
    assert f.payload == b"hello udp"
    ip = f.ip
    assert ip is not None
    frame = net.udp_frame(
        net.KVMTOOL_GUEST_MAC, net.KVMTOOL_HOST_MAC, HOST, GUEST, 0x9677, 5353, b"hello udp", ident=ip.ident
    )
    assert frame == UDP_HELLO


def test_icmp_captured():
    _, req = net.IPv4.parse(ICMP_REQUEST_IP)
    assert net.IcmpEcho.parse(req) == net.IcmpEcho(net.IcmpType.ECHO_REQUEST, 1, 1)
    rep_ip, rep = net.IPv4.parse(ICMP_REPLY_IP)
    assert rep_ip.flags_frag == 0
    assert net.IcmpEcho(net.IcmpType.ECHO_REPLY, 1, 1).pack() == rep
    # The whole reply from its fields gives the kernel's bytes.
    packed = net.IPv4(rep_ip.src, rep_ip.dst, 1, ident=rep_ip.ident, flags_frag=0).pack(len(rep)) + rep
    assert packed == ICMP_REPLY_IP


def test_ipv4_rejects():
    good = UDP_HELLO[14:]
    for bad in (
        good[:19],
        b"\x65" + good[1:],
        good[:2] + b"\x00\x10" + good[4:],
        good[:2] + b"\xff\xff" + good[4:],
    ):
        with pytest.raises(net.NetParseError):
            net.IPv4.parse(bad)
    corrupted = bytearray(good)
    corrupted[8] ^= 1  # TTL: header checksum fails
    with pytest.raises(net.NetParseError):
        net.IPv4.parse(bytes(corrupted))
    # Ethernet padding after the total length is dropped.
    _, payload = net.IPv4.parse(good + b"\x00" * 10)
    assert payload.endswith(b"hello udp")
    frag = net.IPv4(HOST, GUEST, 17, flags_frag=net.IP_FLAG_MF).pack(0)
    assert net.IPv4.parse(frag)[0].is_fragment


def test_virtio_net_hdr():
    hdr = net.VirtioNetHdr(
        flags=1, gso_type=0, hdr_len=54, gso_size=0, csum_start=34, csum_offset=16, num_buffers=1
    )
    raw = hdr.pack()
    # virtio 1.1 §5.1.6: u8 flags, u8 gso_type, le16 hdr_len, gso_size, csum_start, csum_offset, num_buffers.
    assert raw == bytes([1, 0, 54, 0, 0, 0, 34, 0, 16, 0, 1, 0])
    assert len(raw) == net.VIRTIO_NET_HDR_SIZE == 12
    assert net.VirtioNetHdr.parse(raw) == hdr
    h, frame = net.split_virtio_net(raw + ARP_REQUEST)
    assert h == hdr and frame == ARP_REQUEST
    assert net.virtio_net_config(net.KVMTOOL_GUEST_MAC) == bytes.fromhex("021515151515") + b"\x01\x00"
    with pytest.raises(net.NetParseError):
        net.VirtioNetHdr.parse(raw[:11])


def test_dhcp_layout_offsets():
    mac = net.KVMTOOL_GUEST_MAC
    msg = net.Dhcp(
        net.DhcpOp.BOOTREPLY,
        0x3903F326,
        mac,
        yiaddr=GUEST,
        siaddr=HOST,
        flags=net.DHCP_FLAG_BROADCAST,
        options={
            net.DhcpOption.MESSAGE_TYPE: bytes([net.DhcpMessageType.OFFER]),
            net.DhcpOption.SUBNET_MASK: socket.inet_aton("255.255.255.0"),
            net.DhcpOption.ROUTER: HOST,
            net.DhcpOption.DNS: HOST + socket.inet_aton("8.8.8.8"),
            net.DhcpOption.LEASE_TIME: struct.pack("!I", 86400),
            net.DhcpOption.SERVER_ID: HOST,
        },
    )
    raw = msg.pack()
    # RFC 2131 §2 Table 1 offsets.
    assert raw[0] == 2 and raw[1] == 1 and raw[2] == 6 and raw[3] == 0
    assert raw[4:8] == bytes.fromhex("3903f326")
    assert raw[10:12] == b"\x80\x00"
    assert raw[16:20] == GUEST and raw[20:24] == HOST
    assert raw[28:34] == mac and raw[34:44] == b"\x00" * 10
    assert raw[236:240] == bytes([99, 130, 83, 99])  # RFC 2132 §2 magic cookie
    assert raw[240:243] == bytes([53, 1, 2])  # RFC 2132 §9.6: DHCPOFFER
    assert len(raw) >= 300 and net.DhcpOption.END in raw[243:]
    back = net.Dhcp.parse(raw)
    assert back.message_type == net.DhcpMessageType.OFFER
    assert back.ip_option(net.DhcpOption.SUBNET_MASK) == net.prefix_mask(24)
    assert back.ip_option(net.DhcpOption.ROUTER) == HOST
    assert back.options[net.DhcpOption.DNS][4:] == socket.inet_aton("8.8.8.8")
    assert back.u32_option(net.DhcpOption.LEASE_TIME) == 86400
    assert back.ip_option(net.DhcpOption.SERVER_ID) == HOST
    assert back.chaddr == mac and back.yiaddr == GUEST and back.xid == 0x3903F326
    with pytest.raises(net.NetParseError):
        net.Dhcp.parse(raw[:239])
    with pytest.raises(net.NetParseError):
        net.Dhcp.parse(raw[:236] + b"\x00\x00\x00\x00" + raw[240:])
    with pytest.raises(net.NetParseError):
        net.Dhcp.parse(raw[:240] + bytes([53, 9, 1]))


def test_seq_compare():
    assert net.seq_lt(0xFFFF_FFF0, 5) and not net.seq_lt(5, 0xFFFF_FFF0)
    assert net.seq_le(7, 7) and not net.seq_lt(7, 7)


@pytest.mark.parametrize("n", range(0, 64))
def test_truncated_frames_never_crash(n):
    for frame in (ARP_REQUEST, TCP_SYN, UDP_HELLO):
        with contextlib.suppress(net.NetParseError):
            net.parse_frame(frame[:n])
