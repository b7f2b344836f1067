"""Hostile kernel images: a realm owner's modified kernel tries to reach outside its kernel
process (files, sockets, ctypes, the monitor's objects through gc and frames, the memory file
beyond its grants), to rewrite its RIM other than through RSI, and to allocate past its RAM.
Each image is the real kernel with a hook added; what it reached it prints on the console."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pytest

from unirealm.attest.measure import measure_launch
from unirealm.attest.refvals import ReferenceValues
from unirealm.attest.verify import verify_token
from unirealm.cli.measure import launch_of_run
from unirealm.host.cmdline import RunConfig, run_parser
from unirealm.host.image import build_image
from unirealm.host.vmm import Vmm, VmmError
from unirealm.machine.platform import PlatformRoT

from .conftest import ROOT, compile_c

KERNEL = (ROOT / "src" / "unirealm" / "guest" / "kernel.py").read_text()
ENVS = {"kvm": ["--platform", "kvm"], "rme": ["--platform", "rme"], "realm": ["--realm"]}
MONITOR_TYPES = ("Rmm", "RmmState", "Machine", "Vmm", "PlatformRoT", "Monitor", "PhysicalMemory", "MemoryAccessor",
                 "RealmVm", "HostPages", "Realm", "Rec", "KernelProcess", "PlatformIdentity")

# Runs inside the guest kernel (its image), before the app: every way out it can think of.
ESCAPE = r'''

def _hostile_escape(kernel):
    import errno, gc, os, sys
    report = []

    def attempt(name, fn):
        try:
            report.append(f"{name}=reached {fn()!r}"[:120])
        except BaseException as exc:
            report.append(f"{name}=failed {type(exc).__name__} {getattr(exc, 'errno', '')}")

    def write_file():
        with open(MARKER, "w") as f:
            f.write("escaped")
        return "wrote"

    attempt("open", write_file)
    attempt("listdir", lambda: os.listdir("/"))
    attempt("environ", lambda: dict(os.environ) or (_ for _ in ()).throw(LookupError("empty")))
    import socket
    attempt("socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(("127.0.0.1", 1)))
    attempt("socketpair", lambda: socket.socketpair())
    attempt("fork", lambda: os.fork())
    attempt("exec", lambda: os.execv("/bin/sh", ["sh"]))
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)

    def syscall(name, *args):
        rc = getattr(libc, name)(*args)
        if rc in (-1, None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), name)
        return rc

    ppid = os.getppid()
    attempt("kill-parent", lambda: syscall("kill", ppid, 0))
    attempt("ptrace-parent", lambda: syscall("ptrace", 16, ppid, 0, 0))
    attempt("dlopen", lambda: ctypes.CDLL("libresolv.so.2"))
    # the memory file, at offsets never granted: the start of DRAM, anywhere, anyhow
    attempt("fstat", lambda: os.fstat(0))
    def is_open(fd):  # lseek is allowed (fstat is not): EBADF only for a closed descriptor
        try:
            os.lseek(fd, 0, os.SEEK_CUR)
        except OSError as exc:
            return exc.errno != errno.EBADF
        return True

    # the channel, the memory file twice, the eventfd (the channel keeps the number it has in
    # the VMM, which a long-running VMM process may have put anywhere below its descriptor limit)
    fds = [fd for fd in range(1 << 16) if is_open(fd)]
    for fd in fds:
        attempt(f"mmap-fd{fd}-any", lambda fd=fd: syscall("mmap", None, 4096, 1, 1, fd, 0))
        attempt(f"mmap-fd{fd}-window", lambda fd=fd: syscall("mmap", 0x1000_0000_0000 + 0x4000_0000, 4096, 1, 0x11, fd, 0))
        attempt(f"pread-fd{fd}", lambda fd=fd: os.pread(fd, 16, 0))
        attempt(f"ftruncate-fd{fd}", lambda fd=fd: os.ftruncate(fd, 0))
    # the monitor's objects
    found = sorted({type(o).__name__ for o in gc.get_objects()} & set(MONITOR_TYPES))
    report.append(f"gc-types={','.join(found) or 'none'}")
    mods = sorted(m for m in sys.modules if m.split(".")[:2] in (["unirealm", "rmm"], ["unirealm", "host"],
                                                               ["unirealm", "attest"], ["unirealm", "cli"]))
    report.append(f"modules={','.join(mods) or 'none'}")
    frame, outer = sys._getframe(), []
    while frame is not None:
        outer.append(frame.f_code.co_name)
        frame = frame.f_back
    report.append(f"outermost-frame={outer[-1]}")
    report.append(f"fds={','.join(map(str, fds))}")
    return report


def _hostile_run_app(self):
    for line in _hostile_escape(self):
        self.log("hostile: " + line, error=True)  # shown at the quiet default
    return 0


Kernel.run_app = _hostile_run_app
'''

# Before the token is made: rewrite the RIM by any means but RSI_MEASUREMENT_EXTEND of a REM.
REWRITE_RIM = r'''

def _hostile_rewrite(kernel):
    import gc
    report = []
    target = bytes.fromhex(TARGET_RIM)
    touched = 0
    for obj in gc.get_objects():  # anything that looks like a measurement register
        for attr in ("rim", "measurements", "rems"):
            try:
                if hasattr(obj, attr) and not isinstance(obj, type):
                    setattr(obj, attr, target if attr == "rim" else [target] * 5)
                    touched += 1
            except Exception:
                pass
    report.append(f"objects-rewritten={touched}")
    # RSI: the RIM (index 0) is not extendable
    status = kernel.rsi.measurement_extend(0, target)
    report.append("extend-rim=accepted" if status == 0 else f"extend-rim=refused {status}")
    # every IPA outside RAM, written through GuestCpu: faults, never another world's memory
    for ipa in (0x0, 0x1000_0000, 0x7000_0000):
        try:
            kernel.cpu.write(ipa, target)
            report.append(f"write-{ipa:#x}=done")
        except Exception as exc:
            report.append(f"write-{ipa:#x}=failed {type(exc).__name__}")
    return report


_original_print_token = Kernel.print_token


def _hostile_print_token(self, challenge):
    for line in _hostile_rewrite(self):
        self.log("hostile: " + line, error=True)  # shown at the quiet default
    return _original_print_token(self, challenge)


Kernel.print_token = _hostile_print_token
'''

# The kernel's own heap past the RAM it was given (not guest RAM: the interpreter's memory).
HOARD = r'''

_original_boot = boot


def boot(cpu):  # noqa: F811 - the image's entry point, replaced
    hoard = []
    while True:  # no panic handler: the failure leaves the kernel
        hoard.append(bytearray(64 << 20))
'''


# A kernel that keeps its mapping of a granule the host takes back (ACKs REVOKE, unmaps nothing).
KEEP_MAPPING = r'''

def _hostile_run_app(self):
    import gc
    engine = next(o for o in gc.get_objects() if type(o).__name__ == "ChildEngine")
    if KEEP:
        engine._revoke = lambda ipa, size: None
    page = self.pages.alloc()
    self.cpu.write(page, b"secret")  # mapped now
    self.rsi.set_memory_shared(page, 4096)  # RIPAS EMPTY: the host destroys the granule
    self.log(f"hostile: still mapped={page in engine.mapped}", error=True)
    try:
        self.cpu.read(page, 6)
        self.log("hostile: read after EMPTY=done", error=True)
    except Exception as exc:
        self.log(f"hostile: read after EMPTY=failed {exc}", error=True)
    return 0


Kernel.run_app = _hostile_run_app
'''


def _image(tmp_path: Path, name: str, source: str, hello_elf: bytes) -> Path:
    path = tmp_path / f"{name}.img"
    path.write_bytes(build_image(hello_elf, "helloworld", extra={"guest/kernel.py": (KERNEL + source).encode()}))
    return path


def _run(*argv: str) -> tuple[int, str]:
    cfg = RunConfig.from_args(run_parser().parse_args(list(argv)))
    out, log = io.BytesIO(), io.BytesIO()
    result = Vmm(cfg, out, None, log_output=log).run()
    return result.status, log.getvalue().decode() + out.getvalue().decode()


@pytest.fixture(scope="module")
def hello_elf(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    tmp = tmp_path_factory.mktemp("elf")
    return compile_c((ROOT / "examples/helloworld/hello.c").read_text(), tmp / "hello")


@pytest.fixture(autouse=True)
def data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path_factory.getbasetemp() / "platform-data"
    monkeypatch.setenv("UNIREALM_DATA_DIR", str(path))
    return path


@pytest.mark.parametrize("env", ["kvm", "realm"])
def test_a_hostile_kernel_reaches_nothing_outside_its_process(env: str, hello_elf: bytes, tmp_path: Path) -> None:
    marker = tmp_path / "escaped"
    source = ESCAPE.replace("MARKER", repr(str(marker))).replace("MONITOR_TYPES", repr(MONITOR_TYPES))
    status, out = _run(*ENVS[env], "-k", str(_image(tmp_path, "escape", source, hello_elf)))
    assert status == 0, out
    lines = dict(line.split("hostile: ", 1)[1].split("=", 1) for line in out.splitlines() if "hostile: " in line)
    assert lines, out
    assert not marker.exists()
    for name in ("open", "listdir", "environ", "socket", "socketpair", "fork", "exec", "kill-parent",
                 "ptrace-parent", "dlopen", "fstat"):
        assert lines[name].startswith("failed"), (name, lines[name])
    mmaps = [k for k in lines if k.startswith(("mmap-", "pread-", "ftruncate-"))]
    assert len(mmaps) == 16
    for name in mmaps:
        assert lines[name].startswith("failed"), (name, lines[name])
    assert lines["gc-types"] == "none"
    assert lines["modules"] == "none"
    assert lines["outermost-frame"] == "<module>"  # the kernel process's own bootstrap, nothing above


def test_a_hostile_kernel_cannot_rewrite_its_rim(hello_elf: bytes, tmp_path: Path) -> None:
    honest = tmp_path / "honest.img"
    honest.write_bytes(build_image(hello_elf, "helloworld"))

    challenge = bytes(range(64))
    params = ["-p", f"attest={challenge.hex()} -- x"]

    def rim(path: Path) -> bytes:
        return measure_launch(launch_of_run(run_parser().parse_args(["--realm", "-k", str(path), *params]))).digest

    target = rim(honest)  # what the honest image, launched alike, reports
    hostile = _image(tmp_path, "rim", REWRITE_RIM.replace("TARGET_RIM", repr(target.hex())), hello_elf)
    status, out = _run("--realm", "-k", str(hostile), *params)
    assert status == 0, out
    assert "hostile: objects-rewritten=" in out
    assert "hostile: extend-rim=refused" in out, out
    assert "hostile: write-0x0=failed" in out
    match = re.search(r"base64\):\n(.*?)\nunirealm: end of", out, re.S)
    assert match is not None, out
    token = base64.b64decode("".join(match.group(1).split()))
    cpak = PlatformRoT().identity.cpak.public_key()
    verdict = verify_token(token, cpak, challenge=challenge)
    assert verdict.ok, verdict.problems
    assert verdict.token.realm is not None
    assert verdict.token.realm.claims[44238] == rim(hostile) != target  # its true RIM
    against_honest = verify_token(token, cpak, challenge=challenge, reference=ReferenceValues(rims=[target]))
    assert not against_honest.ok
    assert any("rim" in str(p).lower() for p in against_honest.problems), against_honest.problems


@pytest.mark.parametrize("env", ["kvm", "realm"])
def test_a_kernel_allocating_past_its_ram_is_stopped_by_its_limit(env: str, hello_elf: bytes, tmp_path: Path) -> None:
    image = _image(tmp_path, "hoard", HOARD, hello_elf)
    with pytest.raises(VmmError) as info:
        _run(*ENVS[env], "-m", "64", "-k", str(image))
    message = str(info.value)
    assert "\n" not in message
    assert "kernel process stopped" in message and "out of memory" in message, message


@pytest.mark.parametrize("keep", [False, True])
def test_a_granule_taken_back_is_unmapped_from_the_kernel_process(keep: bool, hello_elf: bytes, tmp_path: Path) -> None:
    image = _image(tmp_path, "keep", KEEP_MAPPING.replace("KEEP", repr(keep)), hello_elf)
    if not keep:
        status, out = _run("--realm", "-k", str(image))
        assert status == 0, out
        assert "hostile: still mapped=False" in out
        assert "hostile: read after EMPTY=failed synchronous external abort" in out, out
        return
    with pytest.raises(VmmError) as info:
        _run("--realm", "-k", str(image))
    assert "kept a revoked mapping" in str(info.value)
