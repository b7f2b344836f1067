"""configfs-tsm (guest/tsm.py) in a realm on the real RMM (tests/guest/realm_support.py): a
report's outblob is the CCA token for its inblob, made once per inblob generation; an
rtmr item extends the REM it names, as the RMM's measurement shows; the bounds Linux sets
(inblob 32..64 bytes, REM indexes 1..4) and a provider only in a realm; an RMM that
misbehaves gives ENXIO or EFBIG, never a short or overlong token."""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path
from typing import Any

import cbor2
import pytest

from unirealm.arch import token as t
from unirealm.arch.remlog import REM_LOG_PATH, parse_rem_log, replay
from unirealm.arch.rsi import RsiStatus
from unirealm.guest.kernel import Kernel
from unirealm.guest.tsm import TSM_OUTBLOB_MAX, mount_tsm
from unirealm.guest.vfs import O_RDONLY, O_WRONLY, FsError, Vfs

from .realm_support import run_in_realm

CHALLENGE = bytes(range(0x40, 0x80))


def write(vfs: Vfs, path: str, data: bytes) -> None:
    node, _ = vfs.walk(path)
    f = node.open(O_WRONLY, path)
    try:
        f.write(data)
    finally:
        f.close()


def read(vfs: Vfs, path: str) -> bytes:
    node, _ = vfs.walk(path)
    f = node.open(O_RDONLY, path)
    try:
        out = b""
        while chunk := f.read(4096):
            out += chunk
        return out
    finally:
        f.close()


def mkdir(vfs: Vfs, path: str) -> None:
    head, _, name = path.rpartition("/")
    group, _ = vfs.walk(head)
    group.mkdir(name, 0o755)  # type: ignore[attr-defined]


def realm_challenge(token: bytes) -> bytes:
    tag, _platform, realm = t.decode_collection(token)
    assert tag == t.TAG_CCA_TOKEN_COLLECTION and realm is not None
    claims = cbor2.loads(t.decode_sign1(realm).payload)
    return bytes(claims[t.REALM_CHALLENGE])


class CountingRsi:
    """The kernel's RSI driver with its token calls counted (and optionally rewritten)."""

    def __init__(self, kernel: Kernel, init: Any = None, cont: Any = None) -> None:
        self.rsi = kernel.rsi
        self.inits = 0
        self._init, self._cont = init, cont

    def __getattr__(self, name: str) -> Any:
        return getattr(self.rsi, name)

    def attestation_token_init(self, challenge: bytes) -> tuple[int, int]:
        self.inits += 1
        got = self.rsi.attestation_token_init(challenge)
        return self._init(got) if self._init else got

    def attestation_token_continue(self, granule: int, offset: int, size: int) -> tuple[int, int]:
        got = self.rsi.attestation_token_continue(granule, offset, size)
        return self._cont(got) if self._cont else got


def test_report_outblob_is_the_token_for_the_inblob(tmp_path: Path) -> None:
    def body(kernel: Kernel) -> dict[str, Any]:
        vfs = Vfs()
        mount_tsm(kernel, vfs)
        rsi = kernel.rsi = CountingRsi(kernel)  # type: ignore[assignment]
        free = kernel.pages.free_bytes
        mkdir(vfs, "/sys/kernel/config/tsm/report/r0")
        base = "/sys/kernel/config/tsm/report/r0"
        out: dict[str, Any] = {"provider": read(vfs, base + "/provider"), "gen0": read(vfs, base + "/generation")}
        with pytest.raises(FsError) as exc:
            read(vfs, base + "/outblob")  # nothing written yet
        out["empty"] = exc.value.errno
        write(vfs, base + "/inblob", CHALLENGE)
        out["token"] = read(vfs, base + "/outblob")
        out["again"] = read(vfs, base + "/outblob")  # same generation: the cached token
        out["inits"] = rsi.inits
        write(vfs, base + "/inblob", CHALLENGE[:32])  # 32 bytes: zero-padded by TOKEN_INIT
        out["short"] = read(vfs, base + "/outblob")
        out["gen2"] = read(vfs, base + "/generation")
        out["inits2"] = rsi.inits
        out["leak"] = free - kernel.pages.free_bytes
        out["cca-dev"] = vfs.walk("/sys/bus/platform/devices/arm-cca-dev")[1]
        return out

    got = run_in_realm(tmp_path, body).result
    assert got["provider"] == b"arm_cca_guest\n" and got["gen0"] == b"0\n"
    assert got["empty"] == errno.EINVAL
    assert realm_challenge(got["token"]) == CHALLENGE
    assert got["again"] == got["token"] and got["inits"] == 1
    assert realm_challenge(got["short"]) == CHALLENGE[:32] + bytes(32)
    assert got["gen2"] == b"2\n" and got["inits2"] == 2
    assert got["leak"] == 0  # the bounce granule goes back
    assert got["cca-dev"] == "/sys/devices/platform/arm-cca-dev"


@pytest.mark.parametrize(("size", "code"), [(31, errno.EINVAL), (0, errno.EINVAL)])
def test_inblob_shorter_than_32_bytes_is_refused_at_the_read(tmp_path: Path, size: int, code: int) -> None:
    def body(kernel: Kernel) -> int:
        vfs = Vfs()
        mount_tsm(kernel, vfs)
        mkdir(vfs, "/sys/kernel/config/tsm/report/r")
        write(vfs, "/sys/kernel/config/tsm/report/r/inblob", bytes(range(size)))
        with pytest.raises(FsError) as exc:
            read(vfs, "/sys/kernel/config/tsm/report/r/outblob")
        return exc.value.errno

    assert run_in_realm(tmp_path, body).result == code


def test_inblob_past_64_bytes_is_efbig(tmp_path: Path) -> None:
    def body(kernel: Kernel) -> tuple[int, bytes]:
        vfs = Vfs()
        mount_tsm(kernel, vfs)
        mkdir(vfs, "/sys/kernel/config/tsm/report/r")
        node, _ = vfs.walk("/sys/kernel/config/tsm/report/r/inblob")
        f = node.open(O_WRONLY, "inblob")
        assert f.write(bytes(64)) == 64  # exactly the limit is fine
        with pytest.raises(FsError) as exc:
            f.write(b"x")
        f.close()
        return exc.value.errno, read(vfs, "/sys/kernel/config/tsm/report/r/generation")

    code, gen = run_in_realm(tmp_path, body).result
    assert code == errno.EFBIG and gen == b"1\n"


def test_rtmr_extends_the_rem_it_names(tmp_path: Path) -> None:
    data = hashlib.sha256(b"app config").digest()

    def body(kernel: Kernel) -> dict[str, Any]:
        vfs = Vfs()
        mount_tsm(kernel, vfs)
        base = "/sys/kernel/config/tsm/rtmr/m"
        mkdir(vfs, base)
        out: dict[str, Any] = {"allowed": read(vfs, base + "/allowed_index")}
        with pytest.raises(FsError) as exc:
            write(vfs, base + "/data", data)  # no index yet
        out["no-index"] = exc.value.errno
        for bad in (b"0", b"5", b"x", b"-1"):
            with pytest.raises(FsError) as exc:
                write(vfs, base + "/index", bad)
            assert exc.value.errno == errno.EINVAL, bad
        write(vfs, base + "/index", b"0x2\n")
        write(vfs, base + "/data", data)
        out["status"] = read(vfs, base + "/status")
        out["generation"] = read(vfs, base + "/generation")
        out["rems"] = [kernel.rsi.measurement_read(i) for i in range(1, 5)]
        out["log"] = read(vfs, REM_LOG_PATH)
        return out

    got = run_in_realm(tmp_path, body).result
    assert got["allowed"] == b"1-4\n" and got["no-index"] == errno.EINVAL
    assert got["status"] == b"0\n" and got["generation"] == b"2\n"
    rem1 = hashlib.sha256(bytes(32) + data).digest()
    assert [status for status, _ in got["rems"]] == [RsiStatus.SUCCESS] * 4
    assert [value[:32] for _, value in got["rems"]] == [bytes(32), rem1, bytes(32), bytes(32)]
    entries = parse_rem_log(got["log"].decode())
    assert [(e.rem, e.algorithm, e.value) for e in entries] == [(1, "sha-256", data)]
    assert replay(entries)[1] == rem1


def test_rtmr_extend_failure_is_eio_in_status(tmp_path: Path) -> None:
    def body(kernel: Kernel) -> tuple[bytes, bytes]:
        vfs = Vfs()
        tsm = mount_tsm(kernel, vfs)
        kernel.rsi.measurement_extend = lambda index, value: RsiStatus.ERROR_INPUT  # type: ignore[method-assign]
        mkdir(vfs, "/sys/kernel/config/tsm/rtmr/m")
        write(vfs, "/sys/kernel/config/tsm/rtmr/m/index", b"3")
        write(vfs, "/sys/kernel/config/tsm/rtmr/m/data", b"x" * 64)
        return read(vfs, "/sys/kernel/config/tsm/rtmr/m/status"), tsm.rem_log()

    status, log = run_in_realm(tmp_path, body).result
    assert status == f"{-errno.EIO}\n".encode() and log == b""  # a failed extension is not logged


@pytest.mark.parametrize(("init", "cont", "code"), [
    (lambda r: (RsiStatus.ERROR_STATE, r[1]), None, errno.EINVAL),
    (lambda r: (r[0], 0), None, errno.EINVAL),
    (None, lambda r: (RsiStatus.ERROR_INPUT, r[1]), errno.ENXIO),
    (lambda r: (r[0], 100), None, errno.EFBIG),  # the RMM writes past the bound it gave
    (lambda r: (r[0], TSM_OUTBLOB_MAX * 4), lambda r: (RsiStatus.INCOMPLETE, 4096), errno.EFBIG),
])
def test_a_misbehaving_rmm_gives_an_error_not_a_token(tmp_path: Path, init: Any, cont: Any, code: int) -> None:
    def body(kernel: Kernel) -> tuple[int, int]:
        vfs = Vfs()
        mount_tsm(kernel, vfs)
        free = kernel.pages.free_bytes
        kernel.rsi = CountingRsi(kernel, init, cont)  # type: ignore[assignment]
        mkdir(vfs, "/sys/kernel/config/tsm/report/r")
        write(vfs, "/sys/kernel/config/tsm/report/r/inblob", CHALLENGE)
        with pytest.raises(FsError) as exc:
            read(vfs, "/sys/kernel/config/tsm/report/r/outblob")
        return exc.value.errno, free - kernel.pages.free_bytes

    code_got, leak = run_in_realm(tmp_path, body).result
    assert code_got == code and leak == 0


class PlainKernel:
    realm = None

    def log(self, text: str, error: bool = False, level: int | None = None) -> None:
        pass


def test_no_provider_outside_a_realm() -> None:
    vfs = Vfs()
    mount_tsm(PlainKernel(), vfs)  # type: ignore[arg-type]
    for group in ("report", "rtmr"):
        with pytest.raises(FsError) as exc:
            mkdir(vfs, f"/sys/kernel/config/tsm/{group}/x")
        assert exc.value.errno == errno.ENXIO
    for path in (REM_LOG_PATH, "/sys/bus/platform/devices/arm-cca-dev"):
        with pytest.raises(FsError) as exc:
            vfs.walk(path)
        assert exc.value.errno == errno.ENOENT


def test_attributes_refuse_the_wrong_direction(tmp_path: Path) -> None:
    def body(kernel: Kernel) -> list[int]:
        vfs = Vfs()
        mount_tsm(kernel, vfs)
        mkdir(vfs, "/sys/kernel/config/tsm/report/r")
        codes = []
        for name, flags in (("inblob", O_RDONLY), ("outblob", O_WRONLY), ("provider", O_WRONLY)):
            node, _ = vfs.walk(f"/sys/kernel/config/tsm/report/r/{name}")
            with pytest.raises(FsError) as exc:
                node.open(flags, name)
            codes.append(exc.value.errno)
        item, _ = vfs.walk("/sys/kernel/config/tsm/report/r")
        with pytest.raises(FsError) as exc:
            item.add("extra", item)  # items have fixed attributes
        codes.append(exc.value.errno)
        return codes

    assert run_in_realm(tmp_path, body).result == [errno.EACCES] * 3 + [errno.EPERM]


# --- configfs mechanics, without a realm ------------------------------------------------------
@pytest.mark.parametrize(("text", "value"), [(b"4", 4), (b"4\n", 4), (b"0x3", 3), (b"04", 4), (b"010", 8),
                                             (b"0", 0), (b"+2", 2)])
def test_uint_is_kstrtouint_base_0(text: bytes, value: int) -> None:
    from unirealm.guest.tsm import _uint

    assert _uint(text) == value


@pytest.mark.parametrize("text", [b"", b"\n", b"4\n\n", b" 4", b"4 ", b"09", b"0x", b"-1", b"1_0", b"\xff",
                                  b"4\r\n"])
def test_uint_refuses_what_kstrtouint_refuses(text: bytes) -> None:
    from unirealm.guest.tsm import _uint

    with pytest.raises(FsError) as exc:
        _uint(text)
    assert exc.value.errno == errno.EINVAL


def test_generations_refuse_to_wrap_onto_the_last_read() -> None:
    from unirealm.guest.tsm import GENERATION_MASK, Generations

    g = Generations()
    g.write = GENERATION_MASK - 1
    g.advance()
    assert g.write == GENERATION_MASK and g.show() == f"{GENERATION_MASK}\n".encode()
    with pytest.raises(FsError) as exc:
        g.advance()  # the next would be 0: the generation of the last read
    assert exc.value.errno == errno.EBUSY
    g.read = 5
    g.write = 3
    g.advance()
    assert g.write == 4
    with pytest.raises(FsError):
        g.advance()


def test_attribute_modes_and_file_directions() -> None:
    from unirealm.guest.tsm import Attribute

    both = Attribute(show=lambda: b"v\n", store=lambda data: None)
    assert Attribute(show=lambda: b"").mode & 0o777 == 0o444
    assert Attribute(store=lambda data: None).mode & 0o777 == 0o200
    assert Attribute(commit=lambda data: None).mode & 0o777 == 0o200
    assert both.mode & 0o777 == 0o644
    w = both.open(O_WRONLY, "attr")
    with pytest.raises(FsError) as exc:
        w.pread(1, 0)
    assert exc.value.errno == errno.EBADF
    r = both.open(O_RDONLY, "attr")
    with pytest.raises(FsError) as exc:
        r.pwrite(b"x", 0)
    assert exc.value.errno == errno.EBADF
    assert r.read(1) == b"v" and r.seek(0, 1) == 1 and r.seek(0, 0) == 0 and r.read(9) == b"v\n"
    for offset, whence in ((-1, 0), (-3, 1), (0, 2)):
        with pytest.raises(FsError) as exc:
            r.seek(offset, whence)
        assert exc.value.errno == errno.EINVAL


def test_a_binary_attribute_commits_only_what_was_written() -> None:
    from unirealm.guest.tsm import Attribute

    commits: list[bytes] = []
    attr = Attribute(commit=commits.append, max_size=8)
    attr.open(O_WRONLY, "blob").close()  # opened and closed: nothing committed
    assert commits == []
    f = attr.open(O_WRONLY, "blob")
    f.pwrite(b"cd", 2)
    f.pwrite(b"ab", 0)
    f.pwrite(b"!", 6)  # a hole is zero-filled
    f.close()
    assert commits == [b"abcd\0\0!"]


def test_items_are_removable_with_their_attributes() -> None:
    vfs = Vfs()
    kernel = PlainKernel()
    kernel.realm = object()  # a provider: the RSI is never reached by mkdir
    mount_tsm(kernel, vfs)  # type: ignore[arg-type]
    mkdir(vfs, "/sys/kernel/config/tsm/report/a")
    item, _ = vfs.walk("/sys/kernel/config/tsm/report/a")
    assert item.empty()  # type: ignore[attr-defined]  # rmdir may remove it: its attributes go with it
    assert sorted(item.children) == ["generation", "inblob", "outblob", "provider"]  # type: ignore[attr-defined]
    group, _ = vfs.walk("/sys/kernel/config/tsm/report")
    group.remove("a", item)  # type: ignore[attr-defined]
    assert group.get("a") is None  # type: ignore[attr-defined]


def test_a_token_exactly_at_the_bound_is_accepted(tmp_path: Path) -> None:
    def body(kernel: Kernel) -> tuple[bytes, bytes, int]:
        vfs = Vfs()
        tsm = mount_tsm(kernel, vfs)
        size = len(tsm.report_new(CHALLENGE))
        real = kernel.rsi
        kernel.rsi = CountingRsi(kernel, init=lambda r: (r[0], size))  # type: ignore[assignment]
        exact = tsm.report_new(CHALLENGE)
        kernel.rsi = real
        kernel.rsi = CountingRsi(kernel, init=lambda r: (r[0], size - 1))  # type: ignore[assignment]
        with pytest.raises(FsError) as exc:
            tsm.report_new(CHALLENGE)
        with pytest.raises(FsError) as short:
            tsm.report_new(CHALLENGE[:31])
        return exact, str(short.value), exc.value.errno

    exact, short, code = run_in_realm(tmp_path, body).result
    assert realm_challenge(exact) == CHALLENGE and code == errno.EFBIG
    assert "32 to 64 bytes" in short


def test_the_rem_log_has_one_line_per_extension(tmp_path: Path) -> None:
    def body(kernel: Kernel) -> bytes:
        vfs = Vfs()
        mount_tsm(kernel, vfs)
        for name, index, data in (("a", b"1", b"first"), ("b", b"4", b"second")):
            mkdir(vfs, f"/sys/kernel/config/tsm/rtmr/{name}")
            write(vfs, f"/sys/kernel/config/tsm/rtmr/{name}/index", index)
            write(vfs, f"/sys/kernel/config/tsm/rtmr/{name}/data", data)
        return read(vfs, REM_LOG_PATH)

    log = run_in_realm(tmp_path, body).result
    assert log == f"REM0 sha-256 {b'first'.hex()}\nREM3 sha-256 {b'second'.hex()}\n".encode()
