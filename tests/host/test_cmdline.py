from __future__ import annotations

import argparse
import shlex

import pytest

from unirealm.arch.rmi import RmiHashAlgorithm
from unirealm.host.cmdline import (
    CmdlineError,
    HostForward,
    NetParams,
    NinePShare,
    RunConfig,
    add_run_arguments,
    parse_run_args,
)

MiB = 1 << 20


def test_defaults():
    cfg = parse_run_args([])
    assert cfg == RunConfig()
    assert cfg.nrcpus == 1 and cfg.ram_size == 256 * MiB and cfg.ram_addr == 0x8000_0000
    assert cfg.platform == "kvm" and not cfg.realm
    assert cfg.console == "serial" and cfg.loglevel == "info" and cfg.irqchip == "gicv3"
    assert cfg.params == "" and cfg.kernel is None
    assert cfg.default_user_nic and cfg.nics == ()
    assert not cfg.disable_sve


def test_add_run_arguments_on_a_subparser():
    top = argparse.ArgumentParser(prog="unirealm")
    sub = top.add_subparsers(dest="command")
    add_run_arguments(sub.add_parser("run"))
    args = top.parse_args(["run", "-k", "app.img", "-c", "2", "-m", "512M@0x90000000", "-p", "a b"])
    cfg = RunConfig.from_args(args)
    assert (cfg.kernel, cfg.nrcpus, cfg.ram_size, cfg.ram_addr, cfg.params) == (
        "app.img",
        2,
        512 * MiB,
        0x9000_0000,
        "a b",
    )


def test_unikraft_realm_command_line():
    cfg = parse_run_args(
        shlex.split(
            "--realm -k build/app_fc-arm64 -c 1 --nodefaults -i rootfs.cpio --9p ./fs0,fs0 --irqchip=gicv3"
        )
    )
    assert cfg.realm and cfg.platform == "rme"
    assert cfg.nodefaults and cfg.initrd == "rootfs.cpio"
    assert cfg.shares_9p == (NinePShare("./fs0", "fs0"),)
    assert cfg.measurement_algo == "sha256" and cfg.hash_algo == RmiHashAlgorithm.SHA_256
    assert cfg.disable_sve  # no --sve-vl: SVE off so the measurement is deterministic


def test_linux_realm_command_line():
    cfg = parse_run_args(
        [
            "--realm",
            "--measurement-algo=sha512",
            "--disable-sve",
            "--console",
            "serial",
            "--irqchip=gicv3",
            "-m",
            "256M",
            "-c",
            "2",
            "-k",
            "Image",
            "-p",
            "earlycon=ttyS0 console=ttyS0",
            "--realm-pv",
            "0x7465",
            "--pmu-counters",
            "6",
        ]
    )
    assert cfg.hash_algo == RmiHashAlgorithm.SHA_512
    assert cfg.realm_pv == b"te"
    assert cfg.pmu_counters == 6
    assert cfg.irqchip == "gicv3"
    assert cfg.ram_size == 256 * MiB and cfg.nrcpus == 2


def test_default_ram_follows_cpus():
    assert parse_run_args(["-c", "4"]).ram_size == 448 * MiB


def test_sve_vl():
    cfg = parse_run_args(["--realm", "--sve-vl", "256"])
    assert cfg.sve_vl == 256 and cfg.sve_vq == 1 and not cfg.disable_sve


def test_realm_pv_exactly_64_bytes_ok():
    assert parse_run_args(["--realm", "--realm-pv", "ab" * 64]).realm_pv == b"\xab" * 64


def test_platform_rme_for_normal_vm():
    cfg = parse_run_args(["--platform", "rme"])
    assert cfg.platform == "rme" and not cfg.realm
    assert parse_run_args(["--realm", "--platform", "rme"]).platform == "rme"


def test_debug_and_loglevel():
    assert parse_run_args(["--loglevel", "warning"]).loglevel == "warning"
    assert parse_run_args(["--debug"]).loglevel == "debug"
    assert parse_run_args(["--loglevel", "error", "--debug"]).loglevel == "debug"


def test_trace_lists_accumulate():
    cfg = parse_run_args(["--trace", "rsi,rmi", "--trace", "mmio", "--trace=psci"])
    assert cfg.trace == {"rsi", "rmi", "mmio", "psci"}


def test_9p_default_tag_and_disks():
    cfg = parse_run_args(["--9p", "/srv/share", "-d", "disk.img", "--disk", "rootdir"])
    assert cfg.shares_9p == (NinePShare("/srv/share", "kvm_9p"),)
    assert cfg.disks == ("disk.img", "rootdir")


def test_networks():
    cfg = parse_run_args(
        [
            "--network",
            "virtio",
            "-n",
            "mode=user,guest_ip=10.0.0.2,host_ip=10.0.0.1,trans=mmio",
            "-n",
            "mode=none",
            "-n",
        ]
    )
    tap, user, none, bare = cfg.networks
    assert tap == NetParams(mode="tap")  # "virtio" is a key without a value: ignored
    assert user.mode == "user" and user.guest_ip == "10.0.0.2" and user.trans == "mmio"
    assert user.guest_mac == "02:15:15:15:15:16"  # one more per NIC
    assert none.mode == "none"
    assert bare.mode == "tap"
    assert cfg.nics == (tap, user, bare)
    assert not cfg.default_user_nic


def test_network_numeric_keys():
    (net,) = parse_run_args(["-n", "mode=tap,tapif=tap0,vhost=1,mq=4,guest_mac=02:00:00:00:00:01"]).networks
    assert (net.tapif, net.vhost, net.mq, net.guest_mac) == ("tap0", 1, 4, "02:00:00:00:00:01")


def test_hostfwd():
    (net,) = parse_run_args(
        ["-n", "mode=user,hostfwd=tcp:127.0.0.1:8080-:8123,hostfwd=tcp::9000-192.168.33.15:22,hostfwd=:127.9.9.9:1-:2"]
    ).networks
    assert net.hostfwd == (
        HostForward("127.0.0.1", 8080, 8123),
        HostForward("127.0.0.1", 9000, 22, "192.168.33.15"),
        HostForward("127.9.9.9", 1, 2),
    )


def test_kaslr_seed_and_dump_dtb():
    cfg = parse_run_args(["--kaslr-seed", "0xfeedface", "--dump-dtb", "out.dtb"])
    assert cfg.kaslr_seed == 0xFEEDFACE and cfg.dump_dtb == "out.dtb"


def test_console_virtio_and_transport():
    cfg = parse_run_args(["--console", "virtio", "--virtio-transport", "mmio-legacy"])
    assert cfg.console == "virtio" and cfg.virtio_transport == "mmio-legacy"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        # realm-only options without --realm
        (["--measurement-algo", "sha256"], "--measurement-algo valid only with --realm"),
        (["--realm-pv", "abc"], "--realm-pv valid only with --realm"),
        (["--sve-vl", "128"], "--sve-vl valid only with --realm"),
        (["--pmu-counters", "2"], "--pmu-counters valid only with --realm"),
        # realm option values
        (["--realm", "--measurement-algo", "md5"], "unknown realm measurement algorithm"),
        (["--realm", "--realm-pv", "00" * 65], "Realm Personalization Value"),
        (["--realm", "--realm-pv", "zz"], "not an even number of hex digits"),
        (["--realm", "--realm-pv", "abc"], "not an even number of hex digits"),
        (["--realm", "--realm-pv", ""], "not an even number of hex digits"),
        (["--realm", "--sve-vl", "100"], "multiple of 128"),
        (["--realm", "--sve-vl", "0"], "multiple of 128"),
        (["--realm", "--sve-vl", "4096"], "multiple of 128"),
        (["--realm", "--sve-vl", "wide"], "Invalid SVE vector length"),
        (["--realm", "--sve-vl", "256", "--disable-sve"], "SVE VL requested when SVE is disabled"),
        (["--realm", "--pmu-counters", "32"], "PMU counters 32 is out of"),
        (["--realm", "--pmu-counters", "-1"], "PMU counters -1 is out of"),
        (["--realm", "--pmu-counters", "many"], "Invalid number of PMU counters"),
        (["--realm", "--irqchip", "gicv2"], "needs a GICv3"),
        (["--realm", "--irqchip", "gicv2m"], "needs a GICv3"),
        # platform
        (["--realm", "--platform", "kvm"], "--realm needs the rme platform"),
        (["--platform", "xen"], "Unknown platform"),
        # basic options
        (["-c", "0"], "out of [1;512] range"),
        (["-c", "513"], "out of [1;512] range"),
        (["-c", "two"], "Invalid number of CPUs"),
        (["-m", "0"], "Invalid RAM size"),
        (["-m", "lots"], "Invalid memory specifier"),
        (["-m", "256M@"], "Missing memory address"),
        (["-m", "256M@1G"], "below the I/O region"),
        (["--console", "hv"], "Unknown console"),
        (["--loglevel", "verbose"], "Unknown loglevel"),
        (["--irqchip", "gicv4"], "irqchip: unknown type"),
        (["--irqchip", "gicv3-its"], "irqchip gicv3-its is not modelled"),
        (["--realm", "--irqchip", "gicv3-its"], "irqchip gicv3-its is not modelled"),
        (["--irqchip", "gicv2"], "irqchip gicv2 is not modelled"),
        (["--irqchip", "gicv2m"], "irqchip gicv2m is not modelled"),
        (["--virtio-transport", "pci"], "not available"),
        (["--trace", "rsi,gic"], "Unknown trace topic 'gic'"),
        (["--trace", ""], "Unknown trace topic"),
        (["--9p", ",tag"], "missing directory"),
        (["--9p", "dir,"], "empty mount tag"),
        (["--9p", "dir,a,b"], "may hold only letters"),
        (["--9p", "dir,a:b"], "may hold only letters"),
        (["--9p", "dir," + "t" * 33], "longer than 32"),
        (["--9p", "a,x", "--9p", "b,x"], "given twice"),
        (["-p", "a\x01b"], "control character 0x01"),
        (["-p", "a\x7fb"], "control character 0x7f"),
        (["-p", "a\udcffb"], "byte 0xff at offset 1 is not UTF-8"),
        (["-n", "mode=user,guest_ip=10.0.0.2,host_ip=10.0.0.2"], "host_ip and guest_ip are both 10.0.0.2"),
        (["-n", "mode=user,guest_ip=10.0.0.2,host_ip=10.0.1.1"], "not in guest_ip"),
        (["-d", ""], "needs a path"),
        (["--kaslr-seed", "nope"], "Invalid KASLR seed"),
        (["--kaslr-seed", str(1 << 64)], "does not fit in 64 bits"),
        # networking
        (["-n", "colour=blue"], "Unknown network parameter colour"),
        (["-n", "virtio,mode=user"], "Unknown network parameter virtio"),
        (["-n", "mode=bridge"], "Unknown network mode bridge"),
        (["-n", "mode=user", "-n", "mode=user"], "Only one usermode network device"),
        (["-n", "guest_ip=300.1.1.1"], "Invalid guest_ip"),
        (["-n", "guest_mac=zz:00:00:00:00:00"], "Invalid guest_mac"),
        (["-n", "trans=usb"], "Unknown virtio transport"),
        (["-n", "mq=four"], "Invalid mq"),
        (["-n", "mode=user,hostfwd=tcp:0.0.0.0:80-:80"], "not a loopback address"),
        (["-n", "mode=user,hostfwd=tcp:192.168.1.5:80-:80"], "not a loopback address"),
        (["-n", "mode=user,hostfwd=tcp:localhost:80-:80"], "invalid host address"),
        (["-n", "hostfwd=tcp::80-:80"], "needs a user-mode NIC"),
        (["-n", "mode=user,hostfwd=udp::80-:80"], "only tcp forwarding"),
        (["-n", "mode=user,hostfwd=tcp::0-:80"], "invalid host port"),
        (["-n", "mode=user,hostfwd=tcp::80-:70000"], "invalid guest port"),
        (["-n", "mode=user,hostfwd=tcp::80"], "Invalid hostfwd"),
        (["-n", "mode=user,hostfwd=tcp::80-10.0.0.9:80"], "is not the NIC's guest_ip"),
        (["-n", "mode=user,hostfwd=tcp::80-:80,hostfwd=tcp::80-:81"], "forwarded twice"),
        # argparse-level usage errors also come back as CmdlineError
        (["--no-such-option"], "unrecognized arguments"),
        (["-k"], "expected one argument"),
    ],
)
def test_errors(argv, fragment):
    with pytest.raises(CmdlineError) as exc:
        parse_run_args(argv)
    assert fragment in str(exc.value)
    assert "\n" not in str(exc.value)


def test_params_keep_tabs_newlines_and_text():
    assert parse_run_args(["-p", "a\tb\nc é"]).params == "a\tb\nc é"


def test_9p_tag_of_32_characters_ok():
    assert parse_run_args(["--9p", "d," + "T_.-9" * 6 + "ab"]).shares_9p[0].tag == "T_.-9" * 6 + "ab"


def test_tap_refuses_what_it_would_ignore():
    for arg, message in (("mode=tap,guest_ip=10.0.0.2", "guest_ip= is the user-mode network's DHCP lease"),
                         ("guest_ip=10.0.0.2", "guest_ip= is the user-mode network's DHCP lease"),
                         ("mode=tap,tapif=tap3,host_ip=10.0.0.1", "only to a tap the VMM creates"),
                         ("mode=tap,script=/bin/true,host_ip=10.0.0.1", "only to a tap the VMM creates")):
        with pytest.raises(CmdlineError, match=message):
            parse_run_args(["-n", arg])
    (net,) = parse_run_args(["-n", "mode=tap,script=none,host_ip=10.0.0.1"]).networks
    assert (net.mode, net.host_ip, net.tapif) == ("tap", "10.0.0.1", None)
