"""Booting the kernel of a unirealm image (arch/image.py) out of guest memory
(machine/pykernel.py): the header's magic, version and payload hash are checked, the
payload's modules are imported under a name of this boot only and gone after it, and an
image that is not what its header says (no zip, a corrupt member, an entry that names
nothing in the payload) stops the kernel with an ImageError that says so, never with a
traceback of the loader's. image_at recognises the magic at PC + 0x40 only."""

from __future__ import annotations

import importlib
import importlib.util
import io
import sys
import zipfile

import pytest

from unirealm.arch.image import UNIKERNEL_HEADER_OFFSET, UNIKERNEL_MAGIC
from unirealm.machine.pykernel import GuestCpu, ImageError, _PayloadImporter, image_at
from unirealm.machine.vcpu import HvcTrap, WfxTrap

from .pykernel_support import CALLBACK_KERNEL, RAM_IPA, Machine, image, payload, register


def archive(members: dict[str, bytes]) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(payload(members)))


def boot(data: bytes) -> BaseException | None:
    """Boot `data` until the kernel stops its CPU; why it stopped."""
    machine = Machine(data)
    try:
        for _ in range(3):
            assert isinstance(machine.run(), WfxTrap | HvcTrap)
        return machine.engine.finished
    finally:
        machine.close()


# --- the importer ---------------------------------------------------------------------------


def test_specs_of_the_payloads_packages_modules_and_directories() -> None:
    imp = _PayloadImporter("img", archive({"guest/__init__.py": b"", "guest/m.py": b"", "app/prog": b"\x7fELF"}))
    root = imp.find_spec("img")
    assert root is not None and root.submodule_search_locations == []
    package = imp.find_spec("img.guest")
    assert package is not None and package.submodule_search_locations == [] and package.loader is imp
    module = imp.find_spec("img.guest.m")
    assert module is not None and module.submodule_search_locations is None
    directory = imp.find_spec("img.app")  # a directory without __init__.py: a package all the same
    assert directory is not None and directory.submodule_search_locations == []
    for name in ("img.guest.nope", "img.nope", "imgx.guest", "guest", "other.img.guest", "img.app.prog"):
        assert imp.find_spec(name) is None, name


def test_modules_import_from_the_payload_with_relative_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    imp = _PayloadImporter("img_rel", archive({
        "pkg/__init__.py": b"ROOT = True\n",
        "pkg/a.py": b"from . import b\nVALUE = b.VALUE + 1\n",
        "pkg/b.py": b"VALUE = 41\n",
        "data/blob": b"\x00\x01",
    }))
    monkeypatch.setattr(sys, "meta_path", [imp, *sys.meta_path])
    try:
        a = importlib.import_module("img_rel.pkg.a")
        assert a.VALUE == 42 and a.__name__ == "img_rel.pkg.a"
        assert importlib.import_module("img_rel.pkg").ROOT is True
        assert vars(importlib.import_module("img_rel.data")).keys() >= {"__name__"}  # nothing to run
        with pytest.raises(ModuleNotFoundError) as missing:
            importlib.import_module("img_rel.pkg.c")
        assert missing.value.name == "img_rel.pkg.c"
    finally:
        for name in [n for n in sys.modules if n.startswith("img_rel")]:
            del sys.modules[name]
    assert imp.read_file("data/blob") == b"\x00\x01"


def test_a_member_with_a_wrong_crc_is_an_image_error() -> None:
    data = bytearray(payload({"guest/m.py": b"VALUE = 1234567\n"}))
    at = data.index(b"1234567")
    data[at] = ord("9")  # the stored bytes no longer match the member's CRC-32
    imp = _PayloadImporter("img", zipfile.ZipFile(io.BytesIO(bytes(data))))
    spec = imp.find_spec("img.guest.m")
    assert spec is not None
    with pytest.raises(ImageError, match=r"guest/m\.py"):
        imp.exec_module(importlib.util.module_from_spec(spec))
    with pytest.raises(ImageError, match="corrupt"):
        imp.read_file("guest/m.py")
    with pytest.raises(KeyError):  # a member that is not there is not corrupt
        imp.read_file("guest/none.py")


# --- booting ----------------------------------------------------------------------------------


def test_a_booted_kernel_sees_its_images_files_and_leaves_no_module_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []

    def kernel(cpu: GuestCpu) -> None:
        seen.append(cpu.image_files())
        seen.append(cpu.read_image_file("app/hello"))
        seen.append(sorted(n.partition(".")[2] for n in sys.modules if n.startswith("_unirealm_image_")))
        cpu.hvc(0)

    register(monkeypatch, kernel)
    meta_path = list(sys.meta_path)
    assert boot(image({"k.py": CALLBACK_KERNEL, "app/hello": b"hi", "a/b.txt": b""})) is None
    assert seen == [["a/b.txt", "app/hello", "k.py"], b"hi", ["", "k"]]  # the boot's root package and its entry module
    assert sys.meta_path == meta_path
    assert not [n for n in sys.modules if n.startswith("_unirealm_image_")]


def test_two_boots_of_one_image_import_their_own_modules() -> None:
    kernel = b"COUNT = [0]\n\ndef boot(cpu):\n    COUNT[0] += 1\n    cpu.hvc(COUNT[0], id(COUNT))\n"
    data = image({"k.py": kernel})
    first, second = Machine(data), Machine(data)
    try:
        a, b = first.run(), second.run()
        assert isinstance(a, HvcTrap) and isinstance(b, HvcTrap)
        assert a.regs[0] == b.regs[0] == 1 and a.regs[1] != b.regs[1]
    finally:
        first.close()
        second.close()


def test_the_entry_names_a_function_of_a_module_in_the_payload() -> None:
    kernel = b"def startX(cpu):\n    cpu.hvc(0x4B)\n"  # the field's NUL padding goes, nothing else
    machine = Machine(image({"guest/__init__.py": b"", "guest/kernel.py": kernel}, entry=b"guest.kernel:startX"))
    try:
        trap = machine.run()
        assert isinstance(trap, HvcTrap) and trap.regs[0] == 0x4B
    finally:
        machine.close()


@pytest.mark.parametrize(("fields", "message"), [
    ({"magic": b"UNIREALN"}, "no unirealm kernel"),
    ({"version": 2}, "version 2 is not supported"),
    ({"payload_sha256": bytes(32)}, "does not match its header's hash"),
])
def test_a_header_that_does_not_hold_is_an_image_error(fields: dict[str, object], message: str) -> None:
    stopped = boot(image(**fields))  # type: ignore[arg-type]
    assert isinstance(stopped, ImageError) and message in str(stopped)


def test_a_payload_that_is_not_a_zip_archive_is_an_image_error() -> None:
    stopped = boot(image(raw_payload=b"PK\x03\x04 not really" * 20))
    assert isinstance(stopped, ImageError) and "not a zip archive" in str(stopped)


@pytest.mark.parametrize(("entry", "message"), [
    (b"k", "not module:function"),
    (b"k:", "not module:function"),
    (b":boot", "not module:function"),
    (b"", "not module:function"),
    (b":k:boot", "not module:function"),
    (b"k:boot:", "no such function"),
    (b"kernel:boot", "module 'kernel' is not in the payload"),
    (b"guest.kernel:boot", "module 'guest.kernel' is not in the payload"),
    (b"k:start", "no such function"),
    (b"k:VALUE", "no such function"),
])
def test_an_entry_that_names_nothing_in_the_payload_is_an_image_error(entry: bytes, message: str) -> None:
    stopped = boot(image({"k.py": b"VALUE = 1\n\ndef boot(cpu):\n    pass\n"}, entry=entry))
    assert isinstance(stopped, ImageError) and message in str(stopped), stopped


def test_a_corrupt_kernel_module_stops_the_kernel_with_an_image_error() -> None:
    data = bytearray(payload({"k.py": b"def boot(cpu):\n    cpu.hvc(12345)\n"}))
    at = data.index(b"12345")
    data[at] = ord("9")
    stopped = boot(image(raw_payload=bytes(data)))
    assert isinstance(stopped, ImageError) and "'k.py' is corrupt" in str(stopped)


def test_a_module_the_kernel_imports_from_outside_its_image_stays_a_module_error() -> None:
    """Not the image's inconsistency: the kernel needs what this interpreter lacks (the kernel
    process turns it into its rebuild hint)."""
    stopped = boot(image({"k.py": b"import no_such_module_anywhere\n\ndef boot(cpu):\n    pass\n"}))
    assert isinstance(stopped, ModuleNotFoundError) and not isinstance(stopped, ImageError)
    assert stopped.name == "no_such_module_anywhere"


def test_a_kernel_stopped_at_boot_leaves_no_module_behind() -> None:
    meta_path = list(sys.meta_path)
    stopped = boot(image({"k.py": b"import k2\n", "k2.py": b""}, entry=b"k:boot"))
    assert isinstance(stopped, ModuleNotFoundError)
    assert sys.meta_path == meta_path
    assert not [n for n in sys.modules if n.startswith("_unirealm_image_")]


# --- image_at -----------------------------------------------------------------------------------


def test_image_at_looks_for_the_magic_at_pc_plus_0x40() -> None:
    asked: list[tuple[int, int]] = []
    data = image()

    def memory(at: int) -> object:
        def read(ipa: int, size: int) -> bytes | None:
            asked.append((ipa, size))
            off = ipa - at
            return data[off : off + size] if 0 <= off < len(data) else None
        return read

    assert image_at(memory(RAM_IPA), RAM_IPA)  # type: ignore[arg-type]
    assert asked == [(RAM_IPA + UNIKERNEL_HEADER_OFFSET, len(UNIKERNEL_MAGIC))]
    assert not image_at(memory(RAM_IPA), RAM_IPA + 0x40)  # type: ignore[arg-type]
    assert not image_at(memory(RAM_IPA), RAM_IPA - 0x1000)  # type: ignore[arg-type]  # nothing readable


@pytest.mark.parametrize("got", [None, b"", b"UNIREAL", b"unirealm", bytes(8)])
def test_image_at_is_false_on_short_or_other_bytes(got: bytes | None) -> None:
    assert image_at(lambda ipa, size: got, RAM_IPA) is False
