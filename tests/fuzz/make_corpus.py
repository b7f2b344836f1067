"""Write the corpora of malformed inputs the fuzz tests replay (tests/fuzz/corpus/KIND/*.bin):
valid inputs built with the project's own encoders, then cut, bit-flipped, spliced and
grown with a fixed seed, so the files are the same on every run.

    python tests/fuzz/make_corpus.py        # rewrites tests/fuzz/corpus
"""

from __future__ import annotations

import random
import struct
import sys
from pathlib import Path

import cbor2

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from unirealm.arch import net, p9  # noqa: E402
from unirealm.arch import token as t  # noqa: E402
from unirealm.arch.cpio import Entry, pack_archive  # noqa: E402
from unirealm.arch.p9 import P9, Qid, QidType  # noqa: E402

PER_SEED = 40


def tokens() -> list[bytes]:
    claims = {265: "tag:arm.com,2023:cca_platform#1.0.0", 10: bytes(64), 256: b"\x01" + bytes(32),
              2396: bytes(32), 2395: 0x3000, 2399: [{1: "BL", 2: bytes(32), 5: bytes(32)}], 2402: "sha-256"}
    realm = {10: bytes(64), 44238: bytes(32), 44240: ["00" * 32] * 4, 44236: "sha-256", 44237: bytes(97)}
    sign1 = lambda c: cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -35}), {}, cbor2.dumps(c), bytes(96)]))  # noqa: E731
    return [sign1(claims), t.encode_collection(sign1(claims), sign1(realm)),
            t.encode_collection(sign1(claims), sign1(realm), t.TAG_CMW_COLLECTION),
            sign1({265: cbor2.CBORTag(2, b"\xff" * 600), 2400: cbor2.undefined})]


def elf() -> list[bytes]:
    ehdr = bytearray(64)
    ehdr[:16] = b"\x7fELF\x02\x01\x01" + bytes(9)
    struct.pack_into("<HHIQQQIHHHHHH", ehdr, 16, 2, 183, 1, 0x400000, 64, 0, 0, 64, 56, 1, 64, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, 0x400000, 0x400000, 0x1000, 0x1000, 0x1000)
    return [bytes(ehdr) + phdr + bytes(0x1000 - 120)]


def cpio() -> list[bytes]:
    return [pack_archive([Entry("d", 0o40755, b"", 1, nlink=2), Entry("d/f", 0o100644, b"data\n", 2),
                          Entry("l", 0o120777, b"d/f", 3)])]


def ninep() -> list[bytes]:
    q = Qid(QidType.DIR, 0, 1)
    return [p9.encode(P9.TVERSION, p9.NOTAG, msize=8192, version="9P2000.L"),
            p9.encode(P9.TATTACH, 1, fid=0, afid=p9.NOFID, uname="u", aname="", n_uname=0),
            p9.encode(P9.TWALK, 2, fid=0, newfid=1, wnames=["d", "..", "f"]),
            p9.encode(P9.TLOPEN, 3, fid=1, flags=0), p9.encode(P9.TREAD, 4, fid=1, offset=0, count=4096),
            p9.encode(P9.TREADDIR, 5, fid=0, offset=0, count=4096),
            p9.encode(P9.RREADDIR, 6, data=p9.pack_dirent(q, 1, 4, "x"))]


def frames() -> list[bytes]:
    g, h = net.KVMTOOL_GUEST_IP, net.KVMTOOL_GATEWAY_IP
    gm, hm = net.KVMTOOL_GUEST_MAC, net.KVMTOOL_HOST_MAC
    seg = net.Tcp(40000, 8123, 1000, 0, net.TcpFlags.SYN, 65535, net.TcpOptions(mss=1460, wscale=7))
    return [net.tcp_frame(gm, hm, h, g, seg, b"", 1),
            net.tcp_frame(gm, hm, h, g, net.Tcp(40000, 8123, 1001, 5, net.TcpFlags.RST, 0, net.TcpOptions()), b"", 2),
            net.arp_frame(net.ArpOp.REQUEST, hm, h, net.ZERO_MAC, g),
            net.ethernet_frame(gm, hm, net.EtherType.IPV4, net.ipv4_packet(h, g, net.IpProto.UDP, b"\0" * 12))]


def mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    kind = rng.randrange(6)
    if kind == 0 and b:
        del b[rng.randrange(len(b)):]
    elif kind == 1:
        for _ in range(rng.randrange(1, 8)):
            if b:
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif kind == 2:
        b += rng.randbytes(rng.randrange(1, 64))
    elif kind == 3 and len(b) > 4:
        i = rng.randrange(len(b) - 4)
        b[i:i + 4] = rng.choice([b"\xff\xff\xff\xff", b"\0\0\0\0", b"\x7f\xff\xff\xff", b"\x80\0\0\0"])
    elif kind == 4 and len(b) > 2:
        i, j = sorted(rng.sample(range(len(b)), 2))
        b = b[:i] + b[j:] + b[i:j]
    else:
        b = bytearray(rng.randbytes(rng.randrange(0, 256)))
    return bytes(b)


KINDS = {"token": tokens, "elf": elf, "cpio": cpio, "9p": ninep, "frame": frames}


def main() -> None:
    out = Path(__file__).resolve().parent / "corpus"
    for kind, make in KINDS.items():
        folder = out / kind
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.bin"):
            old.unlink()
        rng = random.Random(f"unirealm-{kind}")
        for i, seed in enumerate(make()):
            (folder / f"{i:02d}-valid.bin").write_bytes(seed)
            for j in range(PER_SEED):
                (folder / f"{i:02d}-{j:02d}.bin").write_bytes(mutate(seed, rng))
    print(f"wrote {sum(1 for _ in out.rglob('*.bin'))} files under {out}")


if __name__ == "__main__":
    main()
