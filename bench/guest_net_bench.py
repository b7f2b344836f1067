"""The unikernel's TCP/IP stack per request, in-process (no VMM, no vCPU): a scripted peer
on a fake NIC drives guest/net/stack.py and tcp.py through what httpreply and redis do --
a connection per request (handshake, a 40-byte request, a 1,000-byte answer, both FINs)
and a bulk send of 1 MiB in MSS segments, each acknowledged -- and the CPU time (the peer's
frame building included; it reads the guest's frames in place) is compared
with the same loop on the revision before the last guest network path change (taken from
git history and laid over a copy of today's sources), in the same run.

    python bench/guest_net_bench.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import usernet_bench

MARKER = "F_FIN, F_SYN, F_RST"  # the plain-int control bits of guest/net/tcp.py
FILES = ("src/unirealm/guest/net/tcp.py", "src/unirealm/guest/net/stack.py", "src/unirealm/arch/net.py")

LOOP = r'''
import json, random, sys, time
from unirealm.arch import net
from unirealm.guest.net.stack import NetStack

F = net.TcpFlags
GMAC, HMAC, G, H = net.KVMTOOL_GUEST_MAC, net.KVMTOOL_HOST_MAC, net.KVMTOOL_GUEST_IP, net.KVMTOOL_GATEWAY_IP


class Nic:
    mac = GMAC
    def __init__(self):
        self.inbox, self.sent = [], []
    def poll(self):
        out, self.inbox = self.inbox, []
        return out
    def send(self, frame):
        self.sent.append(frame)
        return True


now = [10**12]
nic = Nic()
rng = random.Random(1)
stack = NetStack(nic, lambda: now[0], lambda: rng.getrandbits(32))
stack.configure(G, 24, H)
stack.arp[H] = HMAC
listener = stack.listen(8123, 16)


def feed(sport, seq, ack, flags, data=b"", window=65535):
    seg = net.Tcp(sport, 8123, seq, ack, flags, window, net.TcpOptions(mss=1460) if flags & F.SYN else net.TcpOptions())
    nic.inbox.append(net.tcp_frame(GMAC, HMAC, H, G, seg, data))
    stack.poll()
    out = list(nic.sent)
    nic.sent.clear()
    return out


def seq_of(frame):  # the peer reads the guest's sequence number in place (IPv4 without options)
    return int.from_bytes(frame[38:42], "big")


def request(sport):
    (synack,) = feed(sport, 1000, 0, F.SYN)
    gseq = seq_of(synack) + 1
    feed(sport, 1001, gseq, F.ACK)
    tcb = listener.ready.popleft()
    feed(sport, 1001, gseq, F.ACK | F.PSH, b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8123\r\n\r\n")
    assert tcb.recv(4096)
    tcb.send(b"x" * 1000)
    stack.poll()
    nic.sent.clear()
    tcb.close()
    stack.poll()
    nic.sent.clear()
    feed(sport, 1041, gseq + 1001, F.ACK | F.FIN)
    now[0] += 2 * 10**9  # past TIME_WAIT
    stack.poll()


def bulk(total):
    (synack,) = feed(39999, 5000, 0, F.SYN)
    gseq = seq_of(synack) + 1
    feed(39999, 5001, gseq, F.ACK)
    tcb = listener.ready.popleft()
    data = bytes(range(256)) * 4
    sent = acked = 0
    frames = []
    while acked < total:
        while sent < total and (n := tcb.send(data)) is not None:
            sent += n
        stack.poll()
        frames += nic.sent
        nic.sent.clear()
        while frames:
            acked += len(frames.pop(0)) - 54  # Ethernet, IPv4 and TCP headers without options
            frames += feed(39999, 5001, (gseq + acked) & 0xFFFFFFFF, F.ACK)


n = int(sys.argv[1])
t = time.process_time()
for i in range(n):
    request(40000 + i % 20000)
per_request = (time.process_time() - t) / n
t = time.process_time()
bulk(1 << 20)
print(json.dumps({"request": per_request, "bulk": time.process_time() - t}))
'''


def measure(src: Path, n: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", LOOP, str(n)], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(src))).stdout
    return json.loads(out)


def run(rounds: int = 5, n: int = 300) -> list[tuple[str, float, float, str]]:
    old = usernet_bench.baseline_sources(MARKER, FILES)
    if old is None:
        raise RuntimeError("no git revision before the guest network path change")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        trees = {"old": usernet_bench.overlay(tmp, "old", old), "new": usernet_bench.overlay(tmp, "new", {})}
        got: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
        for _ in range(rounds):  # interleaved
            for kind, src in trees.items():
                got[kind].append(measure(src, n))
    best = {kind: {k: min(r[k] for r in runs) for k in ("request", "bulk")} for kind, runs in got.items()}
    return [
        ("guest TCP/IP per request (connection, 40 B in, 1000 B out, FINs; CPU): now vs before",
         best["new"]["request"] * 1e6, best["old"]["request"] * 1e6, "us"),
        ("guest TCP/IP, 1 MiB sent in MSS segments, each ACKed (CPU): now vs before",
         best["new"]["bulk"] * 1e3, best["old"]["bulk"] * 1e3, "ms"),
    ]


def main() -> int:
    for name, value, base, unit in run():
        print(f"{name}: {value:.1f} {unit} vs {base:.1f} {unit} = {value / base:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
