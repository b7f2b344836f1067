"""DHCP client (RFC 2131 §3.1: DISCOVER, OFFER, REQUEST, ACK) run once at boot, and the
interface's configuration: the kernel option `ip=ADDR/PREFIX,GATEWAY` first, else DHCP,
else kvmtool's user-network defaults (192.168.33.15/24 via 192.168.33.1)."""

from __future__ import annotations

from typing import Any

from ...arch.net import (
    ANY_IP,
    BROADCAST_IP,
    DHCP_CLIENT_PORT,
    DHCP_FLAG_BROADCAST,
    DHCP_SERVER_PORT,
    KVMTOOL_GATEWAY_IP,
    KVMTOOL_GUEST_IP,
    KVMTOOL_PREFIX,
    Dhcp,
    DhcpMessageType,
    DhcpOp,
    DhcpOption,
    NetParseError,
    ip_bytes,
    mask_prefix,
)

TRY_NS = 700_000_000
TRIES = 3


def parse_ip_option(text: str) -> tuple[bytes, int, bytes | None]:
    """`ADDR/PREFIX,GATEWAY` (the gateway and the prefix may be left out: /24, none)."""
    addr, _, gw = text.partition(",")
    ip, _, prefix = addr.partition("/")
    return ip_bytes(ip), int(prefix) if prefix else 24, ip_bytes(gw) if gw else None


class DhcpClient:
    def __init__(self, stack: Any, wait: Any) -> None:
        self.stack = stack
        self.wait = wait  # wait(deadline_ns): idle until an interrupt or the deadline (frames come meanwhile)
        self.xid = stack.rand32()
        self.replies: list[Dhcp] = []

    def _rx(self, src: bytes, sport: int, payload: bytes) -> None:
        try:
            msg = Dhcp.parse(payload)
        except NetParseError:
            return
        if msg.op == DhcpOp.BOOTREPLY and msg.xid == self.xid and msg.chaddr[:6] == self.stack.mac:
            self.replies.append(msg)

    def _send(self, kind: int, extra: dict[int, bytes]) -> None:
        opts = {DhcpOption.MESSAGE_TYPE: bytes([kind]), DhcpOption.CLIENT_ID: b"\x01" + self.stack.mac,
                DhcpOption.PARAM_REQUEST: bytes([1, 3, 6, 51, 54]), **extra}
        msg = Dhcp(DhcpOp.BOOTREQUEST, self.xid, self.stack.mac, flags=DHCP_FLAG_BROADCAST, options=opts)
        self.stack.send_udp(BROADCAST_IP, DHCP_CLIENT_PORT, DHCP_SERVER_PORT, msg.pack(), src=ANY_IP)

    def _await(self, kind: int) -> Dhcp | None:
        deadline = self.stack.now_ns() + TRY_NS
        while self.stack.now_ns() < deadline:
            self.stack.poll()
            while self.replies:
                msg = self.replies.pop(0)
                if msg.message_type == kind:
                    return msg
                if msg.message_type == DhcpMessageType.NAK:
                    return None
            self.wait(deadline)
        return None

    def run(self) -> tuple[bytes, int, bytes | None, list[bytes]] | None:
        self.stack.udp_hook[DHCP_CLIENT_PORT] = self._rx
        try:
            for _ in range(TRIES):
                self._send(DhcpMessageType.DISCOVER, {})
                offer = self._await(DhcpMessageType.OFFER)
                if offer is None or offer.yiaddr == ANY_IP:
                    continue
                server = offer.ip_option(DhcpOption.SERVER_ID) or offer.siaddr
                self._send(DhcpMessageType.REQUEST,
                           {DhcpOption.REQUESTED_IP: offer.yiaddr, DhcpOption.SERVER_ID: server})
                ack = self._await(DhcpMessageType.ACK)
                if ack is None or ack.yiaddr == ANY_IP:
                    continue
                mask = ack.ip_option(DhcpOption.SUBNET_MASK)
                try:
                    prefix = mask_prefix(mask) if mask else 24
                except ValueError:
                    prefix = 24
                dns_raw = ack.options.get(DhcpOption.DNS, b"")
                dns = [dns_raw[i : i + 4] for i in range(0, len(dns_raw) - 3, 4)]
                return ack.yiaddr, prefix, ack.ip_option(DhcpOption.ROUTER), dns
            return None
        finally:
            self.stack.udp_hook.pop(DHCP_CLIENT_PORT, None)


def configure(kernel: Any, stack: Any) -> str:
    """Configure the interface; returns how ("option", "dhcp" or "default")."""
    option = kernel.options.get("ip")
    if option:
        try:
            ip, prefix, gw = parse_ip_option(option)
            stack.configure(ip, prefix, gw)
            return "option"
        except ValueError:
            kernel.log(f"net: bad ip= option {option!r}; trying DHCP")
    if "nodhcp" not in kernel.options:
        lease = DhcpClient(stack, kernel.wait).run()
        if lease is not None:
            stack.configure(*lease)
            return "dhcp"
    stack.configure(KVMTOOL_GUEST_IP, KVMTOOL_PREFIX, KVMTOOL_GATEWAY_IP)
    return "default"


def start_network(kernel: Any) -> Any:
    """Bring up the first virtio-net NIC, if any; the stack or None."""
    from .stack import NetStack
    from .virtio_net import find_nics

    nics = find_nics(kernel)
    if not nics:
        return None
    nic = nics[0]
    stack = NetStack(nic, kernel.monotonic_ns, kernel.cpu.rndr, kernel.log)
    nic.t.enable_interrupts(lambda status: stack.poll())  # frames in: the NIC's SPI
    how = configure(kernel, stack)
    kernel.log(f"net: {stack.describe()} ({how})")
    return stack
