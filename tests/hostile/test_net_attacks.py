"""The network attacks of `--hostile` (net-garbage, net-rst-storm, net-bad-ack) against the
guest's own TCP/IP stack, in-process: a scripted peer talks to a listening and a connecting
guest socket through `HostileNet`, which forges its frames around every real one. The guest
must drop every malformed frame, answer wrong RSTs and SYNs with challenge ACKs only, reset
wrong handshake ACKs without establishing anything -- and the real connections carry their
bytes intact. Each check fails if the guard it relies on is removed from guest/net."""

from __future__ import annotations

import random
from collections import deque

import pytest

from unirealm.arch import net
from unirealm.guest.net import tcp as tcpmod
from unirealm.guest.net.stack import NetStack
from unirealm.host.hostile import NET_ATTACKS, Hostile, HostileNet

F = net.TcpFlags
GUEST_MAC, PEER_MAC = net.KVMTOOL_GUEST_MAC, b"\x52\x55" + net.KVMTOOL_GATEWAY_IP
GUEST, PEER = net.KVMTOOL_GUEST_IP, net.KVMTOOL_GATEWAY_IP
M32 = 0xFFFF_FFFF


class Wire:
    """Peer <-> HostileNet <-> guest stack (the stack's NIC is this object). `out` keeps every
    frame the guest sent, parsed."""

    def __init__(self, attacks: tuple[str, ...], seed: int) -> None:
        self.now = 10**12
        self.mac = GUEST_MAC
        self.inbox: deque[bytes] = deque()
        self.sent: list[bytes] = []
        rng = random.Random(seed)
        self.stack = NetStack(self, lambda: self.now, lambda: rng.getrandbits(32))
        self.stack.configure(GUEST, 24, PEER)
        self.stack.arp[PEER] = PEER_MAC
        self.attack = HostileNet(Hostile(frozenset(attacks), rng=random.Random(seed + 1)), self.inbox.append)
        self.out: list[net.ParsedFrame] = []

    # the NIC's side, as guest/net/virtio_net.py offers it to the stack
    def poll(self) -> list[bytes]:
        frames = list(self.inbox)
        self.inbox.clear()
        return frames

    def send(self, frame: bytes) -> bool:
        self.sent.append(frame)
        return True

    def run(self) -> list[net.ParsedFrame]:
        new: list[net.ParsedFrame] = []
        for _ in range(10):
            self.stack.poll()
            sent, self.sent = self.sent, []
            if not sent and not self.inbox:
                break
            for frame in sent:
                self.attack.from_guest(frame)  # forged answers go to the guest's inbox first
                new.append(net.parse_frame(frame))
        self.out += new
        return new

    def peer(self, sport: int, dport: int, seq: int, ack: int, flags: int, data: bytes = b"",
             window: int = 65535) -> list[net.ParsedFrame]:
        seg = net.Tcp(sport, dport, seq & M32, ack & M32, flags, window, net.TcpOptions(mss=1460))
        self.attack.to_guest(net.tcp_frame(GUEST_MAC, PEER_MAC, PEER, GUEST, seg, data))
        return self.run()

    def real(self, frames: list[net.ParsedFrame], port: int) -> list[net.Tcp]:
        return [f.tcp for f in frames if f.tcp is not None and f.tcp.sport == port and not f.tcp.flags & F.RST]


@pytest.mark.parametrize("seed", range(4))
def test_passive_open_and_data_survive_every_network_attack(seed: int) -> None:
    w = Wire(NET_ATTACKS, seed)
    listener = w.stack.listen(8123, 4)
    peer_seq = 5000 + seed
    out = w.peer(40000, 8123, peer_seq, 0, F.SYN)
    (synack,) = [t for t in w.real(out, 8123) if t.flags & F.SYN]
    iss = synack.seq
    # net-bad-ack forged two ACKs with wrong acknowledgment numbers after this SYN-ACK: each
    # was reset with SEQ = its ACK (RFC 9293 §3.10.7.4), and nothing was established
    resets = [f.tcp for f in out if f.tcp is not None and f.tcp.flags & F.RST]
    offsets = sorted((r.seq - iss) & M32 for r in resets)
    assert len(offsets) == 2 and 0x1000_0000 < offsets[0] < offsets[1] < 0x8000_0000, resets
    assert not listener.ready
    (tcb,) = listener.pending
    assert tcb.state == tcpmod.SYN_RCVD
    peer_seq += 1
    w.peer(40000, 8123, peer_seq, iss + 1, F.ACK)
    assert len(listener.ready) == 1 and listener.ready[0] is tcb and tcb.state == tcpmod.ESTABLISHED
    # data through the storm and the garbage: every byte once, in order, unchanged
    sent = b""
    for i in range(40):
        chunk = bytes(random.Random(i).randbytes(1 + i * 31))
        out = w.peer(40000, 8123, peer_seq, iss + 1, F.ACK | F.PSH, chunk)
        peer_seq += len(chunk)
        sent += chunk
        for t in w.real(out, 8123):
            assert t.ack == peer_seq or t.ack in (peer_seq - len(chunk),)  # challenge/duplicate ACKs only
    assert tcb.recv(1 << 20) == sent
    assert tcb.state == tcpmod.ESTABLISHED and tcb.rcv_nxt == peer_seq & M32 and not tcb.error
    # the guest answers: its bytes reach the peer, the storm's RSTs change nothing
    assert tcb.send(b"reply") == 5
    out = w.run()
    data = [t for t in w.real(out, 8123) if t.flags & F.PSH]
    assert data and data[0].seq == iss + 1
    out = w.peer(40000, 8123, peer_seq, iss + 6, F.ACK)
    assert tcb.snd_una == (iss + 6) & M32 and tcb.state == tcpmod.ESTABLISHED
    assert w.attack.forged > 40 * 6
    assert w.stack.stats["dropped"] > 40  # the garbage was dropped, not parsed
    # the guest never reset the real connection
    assert not [f for f in w.out if f.tcp is not None and f.tcp.flags & F.RST and f.tcp.seq == tcb.snd_nxt]


@pytest.mark.parametrize("seed", range(3))
def test_active_open_refuses_a_synack_with_a_wrong_ack(seed: int) -> None:
    w = Wire(("net-bad-ack", "net-rst-storm"), seed)
    tcb = w.stack.connect(50000, PEER, 80)
    out = w.run()
    syn = next(f.tcp for f in out if f.tcp is not None and f.tcp.flags == F.SYN)
    rst = [f.tcp for f in out if f.tcp is not None and f.tcp.flags & F.RST]
    assert rst and ((rst[0].seq - syn.seq) & M32) > 0x1000_0000  # reset of the forged SYN-ACK
    assert tcb.state == tcpmod.SYN_SENT
    w.peer(80, 50000, 9000, syn.seq + 1, F.SYN | F.ACK)
    assert tcb.state == tcpmod.ESTABLISHED and tcb.rcv_nxt == 9001
    for i in range(10):
        w.peer(80, 50000, 9001 + i * 3, syn.seq + 1, F.ACK | F.PSH, b"abc")
    assert tcb.recv(100) == b"abc" * 10 and tcb.state == tcpmod.ESTABLISHED


def test_exact_rst_still_resets_through_the_storm() -> None:
    """The storm's RSTs are all wrong; the peer's one exact RST must still end the
    connection (the guard is a check, not a deaf ear)."""
    w = Wire(("net-rst-storm", "net-garbage"), 0)
    listener = w.stack.listen(8123, 4)
    out = w.peer(40000, 8123, 100, 0, F.SYN)
    (synack,) = [t for t in w.real(out, 8123) if t.flags & F.SYN]
    w.peer(40000, 8123, 101, synack.seq + 1, F.ACK)
    tcb = listener.ready.popleft()
    w.peer(40000, 8123, 101, synack.seq + 1, F.ACK | F.PSH, b"x")
    assert tcb.state == tcpmod.ESTABLISHED
    w.peer(40000, 8123, 102, 0, F.RST)
    assert tcb.state == tcpmod.CLOSED


def test_net_attacks_need_a_nic() -> None:
    from unirealm.host.hostile import check_attacks

    for name in NET_ATTACKS:
        assert check_attacks(frozenset({name}), True, 1, 0) == f"--hostile {name} needs a network device (-n)"
        assert check_attacks(frozenset({name}), False, 0, 1) is None
