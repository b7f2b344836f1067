"""Booting an app: the root file system (the image's rootfs/ and app/ files, the initrd
over them, 9p shares over that, configfs-tsm), the app's command line, and its first
process."""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

from ..arch.image import PAYLOAD_APP_DIR
from .loader import ExecError
from .pagecache import PageStore, Store
from .process import Process
from .procfs import mount_system
from .syscalls import Syscalls
from .vfs import Clock, FsError, LinkInode, RegInode, Vfs

if TYPE_CHECKING:
    from .interfaces import Kernel

ROOTFS_DIR = "rootfs/"
ROOTFS_META = "rootfs.json"


def build_vfs(kernel: Kernel) -> tuple[Vfs, str | None]:
    """The root file system: the image's rootfs/ and app/ files, then the initrd on top.
    Returns the VFS and the app's path inside it (None without an app)."""
    cpu = kernel.cpu
    Clock.now_ns = staticmethod(kernel.realtime_ns)
    Store.current = PageStore(kernel.pages, cpu)  # file contents live in the realm's RAM
    vfs = Vfs()
    from .tsm import mount_tsm

    mount_tsm(kernel, vfs)
    names = cpu.image_files()
    meta: dict[str, Any] = {}
    if ROOTFS_META in names:
        meta = json.loads(cpu.read_image_file(ROOTFS_META))
    modes = meta.get("modes", {})
    for name in names:
        if name.endswith("/"):
            continue
        if name.startswith(ROOTFS_DIR):
            path = "/" + name[len(ROOTFS_DIR) :]
        elif name.startswith(PAYLOAD_APP_DIR):
            path = "/" + name[len(PAYLOAD_APP_DIR) :]
        else:
            continue
        mode = modes.get(path, 0o755 if name.startswith(PAYLOAD_APP_DIR) else 0o644)
        vfs.install(path, RegInode(mode=mode, loader=functools.partial(cpu.read_image_file, name)))
    for path, target in sorted(meta.get("links", {}).items()):
        vfs.install(path, LinkInode(target))
    app = meta.get("app")
    if app is None:
        apps = [n for n in names if n.startswith(PAYLOAD_APP_DIR) and not n.endswith("/")]
        app = "/" + apps[0][len(PAYLOAD_APP_DIR) :] if apps else None
    if kernel.info.initrd:
        from .cpio import load_cpio, read_initrd

        start, end = kernel.info.initrd
        count = load_cpio(vfs, read_initrd(cpu, start, end))
        kernel.log(f"initrd: {count} entries unpacked into /")
    if any(d.compatible == "virtio,mmio" for d in kernel.info.devices):
        from .p9 import mount_all

        mount_all(kernel, vfs)  # 9p shares go over any initrd content at their paths
    return vfs, app


def split_cmdline(text: str) -> list[tuple[str, bool]]:
    """Words of a command line, as (word, quoted): "double" or 'single' quotes group words
    with spaces and are removed; nothing else is special."""
    words: list[tuple[str, bool]] = []
    word: list[str] = []
    quote = ""
    quoted = started = False
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
            else:
                word.append(ch)
        elif ch in "\"'":
            quote, quoted, started = ch, True, True
        elif ch.isspace():
            if started:
                words.append(("".join(word), quoted))
            word, quoted, started = [], False, False
        else:
            word.append(ch)
            started = True
    if started:
        words.append(("".join(word), quoted))
    return words


def app_argv(kernel: Kernel) -> list[str]:
    """The app's arguments: the words after the command line's first `--`, with quoting
    (`-- sh -c "ls /data | wc -l"`)."""
    words = split_cmdline(kernel.info.bootargs)
    for i, (word, quoted) in enumerate(words):
        if word == "--" and not quoted:
            return [w for w, _ in words[i + 1 :]]
    return list(kernel.argv)


def run_app(kernel: Kernel) -> int:
    from ..arch.cpio import CpioError

    try:
        vfs, app = build_vfs(kernel)
    except CpioError as exc:
        kernel.log(f"initrd: {exc}", error=True)
        return 1
    if app is None:
        kernel.log("no application in the image")
        return 0
    try:
        data = vfs.read_file(app)
        process = Process.spawn(kernel, data, [app, *app_argv(kernel)], app, Syscalls, vfs=vfs)
    except (ExecError, FsError) as exc:
        msg = f"cannot execute {app}: {exc}" if isinstance(exc, FsError) else str(exc)
        kernel.log(msg, error=True)
        return 126
    mount_system(process)
    status = process.run()
    kernel.log(f"{app.rsplit('/', 1)[-1]} exited with status {status}")
    return status

