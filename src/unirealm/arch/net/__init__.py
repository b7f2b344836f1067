"""Network packet layouts shared by the host's virtio-net/user network and the guest's stack.

Each layout names its source:

- virtio 1.1 §5.1.6 "Device Operation": struct virtio_net_hdr (12 bytes with VERSION_1,
  i.e. virtio_net_hdr_v1 including num_buffers) before every frame on both queues;
  §5.1.3 feature bits, §5.1.4 struct virtio_net_config (mac[6], status, ...).
- IEEE 802.3 / RFC 894: the Ethernet II header (dst[6], src[6], ethertype be16).
- RFC 826: ARP for IPv4 over Ethernet (28 bytes).
- RFC 791 §3.1: the IPv4 header; RFC 1071: the internet checksum.
- RFC 792: ICMP echo / echo reply.
- RFC 768: UDP, its checksum over the RFC 768 pseudo-header.
- RFC 9293 §3.1: the TCP header and its options (§3.2: EOL, NOP, MSS; RFC 7323 §2 window
  scale, §3 timestamps; RFC 2018 SACK-permitted and SACK), checksum over the pseudo-header.
- RFC 2131 §2: the DHCP (BOOTP) message; RFC 2132: its options (1, 3, 6, 12, 50, 51, 53,
  54, 55, 61) and the magic cookie.

Addresses are bytes on the wire and here: a MAC is 6 bytes, an IPv4 address 4 bytes.
Every `parse` raises `NetParseError` (a ValueError) on malformed input; callers that read
frames from the other side drop the frame on that error. Standard library only, so the
guest may import it.

One module per layout (common: addresses and RFC 1071; virtio, ethernet, arp, ipv4,
icmp, udp, tcp, dhcp, frames, tap); every name is importable from `unirealm.arch.net`.
"""

from __future__ import annotations

from .arp import (
    ARP_HTYPE_ETHERNET,
    ARP_SIZE,
    Arp,
    ArpOp,
)
from .common import (
    ANY_IP,
    BROADCAST_IP,
    BROADCAST_MAC,
    KVMTOOL_GATEWAY_IP,
    KVMTOOL_GUEST_IP,
    KVMTOOL_GUEST_MAC,
    KVMTOOL_HOST_MAC,
    KVMTOOL_PREFIX,
    ZERO_MAC,
    NetParseError,
    checksum,
    checksum_partial,
    int_ip,
    ip_bytes,
    ip_int,
    ip_str,
    mac_bytes,
    mac_str,
    mask_prefix,
    prefix_mask,
    pseudo_header_sum,
)
from .dhcp import (
    DHCP_CLIENT_PORT,
    DHCP_FIXED_SIZE,
    DHCP_FLAG_BROADCAST,
    DHCP_MAGIC_COOKIE,
    DHCP_SERVER_PORT,
    Dhcp,
    DhcpMessageType,
    DhcpOp,
    DhcpOption,
    dhcp_message_type,
)
from .ethernet import (
    ETH_FRAME_MAX,
    ETH_HLEN,
    ETH_MTU,
    Ethernet,
    EtherType,
    ethernet_frame,
)
from .frames import (
    ParsedFrame,
    arp_frame,
    parse_frame,
    seq_le,
    seq_lt,
    tcp_frame,
    udp_frame,
)
from .icmp import (
    ICMP_HLEN,
    IcmpEcho,
    IcmpType,
)
from .ipv4 import (
    IP_DEFAULT_TTL,
    IP_FLAG_DF,
    IP_FLAG_MF,
    IP_FRAG_OFFSET_MASK,
    IPV4_HLEN,
    IpProto,
    IPv4,
    ipv4_packet,
)
from .tap import (
    AF_INET,
    IFF_NO_PI,
    IFF_RUNNING,
    IFF_TAP,
    IFF_UP,
    IFNAMSIZ,
    IFREQ_SIZE,
    SIOCGIFFLAGS,
    SIOCSIFADDR,
    SIOCSIFFLAGS,
    TUNGETIFF,
    TUNSETIFF,
    ifreq_addr,
    ifreq_flags,
    ifreq_get_flags,
    ifreq_name,
)
from .tcp import (
    TCP_DEFAULT_MSS,
    TCP_HLEN,
    TCP_MAX_WSCALE,
    Tcp,
    TcpFlags,
    TcpOpt,
    TcpOptions,
)
from .udp import (
    UDP_HLEN,
    Udp,
    udp_datagram,
)
from .virtio import (
    VIRTIO_NET_CONFIG_MAC,
    VIRTIO_NET_CONFIG_SIZE,
    VIRTIO_NET_CONFIG_STATUS,
    VIRTIO_NET_HDR_F_DATA_VALID,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_SIZE,
    VIRTIO_NET_RX_QUEUE,
    VIRTIO_NET_S_LINK_UP,
    VIRTIO_NET_TX_QUEUE,
    VirtioNetFeature,
    VirtioNetHdr,
    split_virtio_net,
    virtio_net_config,
)

__all__ = [
    "AF_INET",
    "ANY_IP",
    "ARP_HTYPE_ETHERNET",
    "ARP_SIZE",
    "BROADCAST_IP",
    "BROADCAST_MAC",
    "DHCP_CLIENT_PORT",
    "DHCP_FIXED_SIZE",
    "DHCP_FLAG_BROADCAST",
    "DHCP_MAGIC_COOKIE",
    "DHCP_SERVER_PORT",
    "ETH_FRAME_MAX",
    "ETH_HLEN",
    "ETH_MTU",
    "ICMP_HLEN",
    "IFF_NO_PI",
    "IFF_RUNNING",
    "IFF_TAP",
    "IFF_UP",
    "IFNAMSIZ",
    "IFREQ_SIZE",
    "IPV4_HLEN",
    "IP_DEFAULT_TTL",
    "IP_FLAG_DF",
    "IP_FLAG_MF",
    "IP_FRAG_OFFSET_MASK",
    "KVMTOOL_GATEWAY_IP",
    "KVMTOOL_GUEST_IP",
    "KVMTOOL_GUEST_MAC",
    "KVMTOOL_HOST_MAC",
    "KVMTOOL_PREFIX",
    "SIOCGIFFLAGS",
    "SIOCSIFADDR",
    "SIOCSIFFLAGS",
    "TCP_DEFAULT_MSS",
    "TCP_HLEN",
    "TCP_MAX_WSCALE",
    "TUNGETIFF",
    "TUNSETIFF",
    "UDP_HLEN",
    "VIRTIO_NET_CONFIG_MAC",
    "VIRTIO_NET_CONFIG_SIZE",
    "VIRTIO_NET_CONFIG_STATUS",
    "VIRTIO_NET_HDR_F_DATA_VALID",
    "VIRTIO_NET_HDR_F_NEEDS_CSUM",
    "VIRTIO_NET_HDR_GSO_NONE",
    "VIRTIO_NET_HDR_SIZE",
    "VIRTIO_NET_RX_QUEUE",
    "VIRTIO_NET_S_LINK_UP",
    "VIRTIO_NET_TX_QUEUE",
    "ZERO_MAC",
    "Arp",
    "ArpOp",
    "Dhcp",
    "DhcpMessageType",
    "DhcpOp",
    "DhcpOption",
    "EtherType",
    "Ethernet",
    "IPv4",
    "IcmpEcho",
    "IcmpType",
    "IpProto",
    "NetParseError",
    "ParsedFrame",
    "Tcp",
    "TcpFlags",
    "TcpOpt",
    "TcpOptions",
    "Udp",
    "VirtioNetFeature",
    "VirtioNetHdr",
    "arp_frame",
    "checksum",
    "checksum_partial",
    "dhcp_message_type",
    "ethernet_frame",
    "ifreq_addr",
    "ifreq_flags",
    "ifreq_get_flags",
    "ifreq_name",
    "int_ip",
    "ip_bytes",
    "ip_int",
    "ip_str",
    "ipv4_packet",
    "mac_bytes",
    "mac_str",
    "mask_prefix",
    "parse_frame",
    "prefix_mask",
    "pseudo_header_sum",
    "seq_le",
    "seq_lt",
    "split_virtio_net",
    "tcp_frame",
    "udp_datagram",
    "udp_frame",
    "virtio_net_config",
]
