"""The `lkvm run`-compatible command line: each flag's value checked into the validated RunConfig.

Option names, defaults and refusals follow kvmtool's builtin-run.c and the realm options of
the Arm kvmtool-cca branch (arm/aarch64/include/kvm/kvm-config-arch.h, validate_realm_cfg).
Additions of this model: `--platform kvm|rme` (which machine the VM runs on; a realm needs
RME) and `--trace` (which layers to trace).

Values are checked in RunConfig.from_args, not by argparse, so that every bad value raises
CmdlineError with a one-line message. Differences from kvmtool: the default vCPU count is 1
rather than the host's CPU count (the model machine is not the host), default RAM is not
capped by host RAM, and `-m`'s address also accepts 0x-prefixed byte values.

The flag table itself (names, metavars, help, the parser) is host/runflags.py; this module
holds each flag's default and its checks, to be read against kvmtool's builtin-run.c.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from unirealm.arch.rmi import RmiHashAlgorithm
from unirealm.arch.rsi import RPV_SIZE
from unirealm.arch.token import (
    PROFILE_REALM_1_0,
    REALM_PROFILES_BY_NAME,
    TAG_CCA_TOKEN_COLLECTION,
    TAG_CMW_COLLECTION,
)
from unirealm.host.memmap import (
    ARM_MEMORY_AREA,
    MemoryLayoutError,
    default_ram_size,
    parse_mem_option,
)
from unirealm.host.runflags import IGNORED_DEBUG_FLAGS, IGNORED_FLAGS
from unirealm.host.runflags import CmdlineError as CmdlineError
from unirealm.host.runflags import add_run_arguments as add_run_arguments
from unirealm.host.runflags import run_parser as run_parser

KVM_MAX_VCPUS = 512  # arm64 KVM's vCPU limit
DEFAULT_NRCPUS = 1

MEASUREMENT_ALGOS = {"sha256": RmiHashAlgorithm.SHA_256, "sha512": RmiHashAlgorithm.SHA_512}
DEFAULT_MEASUREMENT_ALGO = "sha256"
SVE_VL_ALIGN = 128  # bits; the vector length is a multiple of 128
SVE_VL_MAX = 2048  # bits; the architectural maximum
PMU_MAX_COUNTERS = 31  # PMUv3 event counters (PMCR_EL0.N is 5 bits)

TOKEN_FORMATS = {"399": TAG_CCA_TOKEN_COLLECTION, "907": TAG_CMW_COLLECTION}

PLATFORMS = ("kvm", "rme")
CONSOLES = ("serial", "virtio")
LOGLEVELS = ("error", "warning", "info", "debug")
TRACE_TOPICS = ("rsi", "rmi", "mmio", "psci", "irq")
IRQCHIPS = ("gicv2", "gicv2m", "gicv3", "gicv3-its")
REALM_IRQCHIPS = ("gicv3", "gicv3-its")
MODELLED_IRQCHIPS = ("gicv3",)  # host/devices/gicv3.py; no ITS, no GICv2
DEFAULT_IRQCHIP = "gicv3"
VIRTIO_TRANSPORTS = ("mmio", "mmio-legacy")  # virtio-pci is not modelled
DEFAULT_VIRTIO_TRANSPORT = "mmio"

DEFAULT_9P_TAG = "kvm_9p"

# virtio-net defaults (kvmtool virtio/net.c).
NET_MODES = ("tap", "user", "none")
NET_KEYS = (
    "guest_mac",
    "mode",
    "script",
    "downscript",
    "guest_ip",
    "host_ip",
    "trans",
    "tapif",
    "vhost",
    "fd",
    "mq",
    "hostfwd",
)
DEFAULT_GUEST_IP = "192.168.33.15"
DEFAULT_HOST_IP = "192.168.33.1"
DEFAULT_GUEST_MAC = "02:15:15:15:15:15"  # the last byte grows by one per NIC
DEFAULT_SCRIPT = "none"
NET_TRANSPORTS = ("mmio", "mmio-legacy", "pci", "pci-legacy")

_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")


@dataclass(frozen=True)
class NinePShare:
    """`--9p dir[,tag]`: a host directory exported over virtio-9p under a mount tag."""

    path: str
    tag: str = DEFAULT_9P_TAG


@dataclass(frozen=True)
class HostForward:
    """`hostfwd=tcp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT` (an extension of kvmtool's user
    mode, spelled as QEMU's): the VMM listens on HOSTADDR:HOSTPORT, a loopback address only,
    and opens a TCP connection to the guest's GUESTPORT for each client."""

    host_addr: str
    host_port: int
    guest_port: int
    guest_addr: str | None = None  # None: the NIC's guest_ip
    proto: str = "tcp"


@dataclass(frozen=True)
class NetParams:
    """One `-n/--network` NIC. Any -n defaults to a tap NIC, as in kvmtool."""

    mode: str = "tap"
    guest_ip: str = DEFAULT_GUEST_IP
    host_ip: str = DEFAULT_HOST_IP
    guest_mac: str = DEFAULT_GUEST_MAC
    script: str = DEFAULT_SCRIPT
    downscript: str = DEFAULT_SCRIPT
    tapif: str | None = None
    trans: str | None = None
    vhost: int = 0
    fd: int | None = None
    mq: int = 0
    hostfwd: tuple[HostForward, ...] = ()


@dataclass(frozen=True)
class RunConfig:
    kernel: str | None = None
    initrd: str | None = None
    params: str = ""
    nrcpus: int = DEFAULT_NRCPUS
    ram_size: int = default_ram_size(DEFAULT_NRCPUS)
    ram_addr: int = ARM_MEMORY_AREA
    realm: bool = False
    platform: str = "kvm"
    measurement_algo: str = DEFAULT_MEASUREMENT_ALGO
    realm_pv: bytes = b""
    sve_vl: int | None = None
    sve_flag: str = "--sve-vl"  # the spelling given (--sve-max-vl is kvmtool-cca's)
    disable_sve: bool = False
    pmu_counters: int | None = None
    pmu: bool = False
    console: str = "serial"
    console_option: str | None = None  # --console as given (kvmtool's command line names it)
    virtio_transport_option: str | None = None  # --virtio-transport as given (kvmtool's default is pci)
    nodefaults: bool = False
    loglevel: str = "info"
    dump_dtb: str | None = None
    trace: frozenset[str] = frozenset()
    shares_9p: tuple[NinePShare, ...] = ()
    networks: tuple[NetParams, ...] = ()
    disks: tuple[str, ...] = ()
    irqchip: str = DEFAULT_IRQCHIP
    kaslr_seed: int | None = None
    virtio_transport: str = DEFAULT_VIRTIO_TRANSPORT
    token_format: int = TAG_CCA_TOKEN_COLLECTION
    realm_profile: str = PROFILE_REALM_1_0
    notes: tuple[str, ...] = ()  # one line each, for stderr: flags accepted that change nothing
    hostile: frozenset[str] = frozenset()

    @property
    def hash_algo(self) -> RmiHashAlgorithm:
        return MEASUREMENT_ALGOS[self.measurement_algo]

    @property
    def sve_vq(self) -> int | None:
        """SVE vector length in quadwords minus one, as the RMM's sve_vl parameter encodes it."""
        return None if self.sve_vl is None else self.sve_vl // SVE_VL_ALIGN - 1

    @property
    def nics(self) -> tuple[NetParams, ...]:
        """The NICs to create: every -n except those with mode=none."""
        return tuple(net for net in self.networks if net.mode != "none")

    @property
    def default_user_nic(self) -> bool:
        """True when no -n was given at all: kvmtool then adds one user-mode NIC."""
        return not self.networks

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunConfig:
        realm = bool(args.realm)

        nrcpus = DEFAULT_NRCPUS if args.cpus is None else _int(args.cpus, "number of CPUs")
        if not 1 <= nrcpus <= KVM_MAX_VCPUS:
            raise CmdlineError(f"Number of CPUs {nrcpus} is out of [1;{KVM_MAX_VCPUS}] range")

        if args.mem is None:
            ram_size, ram_addr = default_ram_size(nrcpus), ARM_MEMORY_AREA
        else:
            try:
                ram_size, ram_addr = parse_mem_option(args.mem)
            except MemoryLayoutError as exc:
                raise CmdlineError(str(exc)) from None

        platform = args.platform if args.platform is not None else ("rme" if realm else "kvm")
        if platform not in PLATFORMS:
            raise CmdlineError(f"Unknown platform {platform!r}: use kvm or rme")
        if realm and platform != "rme":
            raise CmdlineError("--realm needs the rme platform, not --platform kvm")

        # Realm-only options are refused without --realm (kvmtool validate_realm_cfg).
        if not realm:
            for flag, value in (
                ("--measurement-algo", args.measurement_algo),
                ("--realm-pv", args.realm_pv),
                ("--sve-vl", args.sve_vl),
                ("--sve-max-vl", getattr(args, "sve_max_vl", None)),
                ("--pmu-counters", args.pmu_counters),
                ("--token-format", getattr(args, "token_format", None)),
                ("--token-profile", getattr(args, "token_profile", None)),
            ):
                if value is not None:
                    raise CmdlineError(f"{flag} valid only with --realm")

        algo = DEFAULT_MEASUREMENT_ALGO if args.measurement_algo is None else args.measurement_algo
        if algo not in MEASUREMENT_ALGOS:
            raise CmdlineError(f"unknown realm measurement algorithm {algo!r}: use sha256 or sha512")

        realm_pv = b""
        if args.realm_pv is not None:
            realm_pv = parse_realm_pv(args.realm_pv)

        disable_sve = bool(args.disable_sve)
        sve_vl = None
        sve_text, sve_flag = args.sve_vl, "--sve-vl"
        if getattr(args, "sve_max_vl", None) is not None:
            if sve_text is not None and sve_text != args.sve_max_vl:
                raise CmdlineError("--sve-vl and --sve-max-vl name different vector lengths")
            sve_text, sve_flag = args.sve_max_vl, "--sve-max-vl"
        if sve_text is not None:
            sve_vl = _int(sve_text, "SVE vector length")
            if disable_sve:
                raise CmdlineError("SVE VL requested when SVE is disabled")
            if sve_vl % SVE_VL_ALIGN or not SVE_VL_ALIGN <= sve_vl <= SVE_VL_MAX:
                raise CmdlineError(f"SVE VL {sve_vl} is not a multiple of {SVE_VL_ALIGN} bits in [128;2048]")
        elif realm:
            # An unrequested vector length would put the host's SVE VL into the measurement.
            disable_sve = True

        pmu_counters = None
        if args.pmu_counters is not None:
            pmu_counters = _int(args.pmu_counters, "number of PMU counters")
            if not 0 <= pmu_counters <= PMU_MAX_COUNTERS:
                raise CmdlineError(
                    f"Number of PMU counters {pmu_counters} is out of [0;{PMU_MAX_COUNTERS}] range"
                )

        console = "serial" if args.console is None else args.console
        if console not in CONSOLES:
            raise CmdlineError(f"Unknown console {console!r}: use serial or virtio")

        loglevel = "info" if args.loglevel is None else args.loglevel
        if loglevel not in LOGLEVELS:
            raise CmdlineError(f"Unknown loglevel: {loglevel}")
        if args.debug:
            loglevel = "debug"

        irqchip = DEFAULT_IRQCHIP if args.irqchip is None else args.irqchip
        if irqchip not in IRQCHIPS:
            raise CmdlineError(f'irqchip: unknown type "{irqchip}"')
        if realm and irqchip not in REALM_IRQCHIPS:
            raise CmdlineError(f"a realm needs a GICv3 (--irqchip gicv3 or gicv3-its), not {irqchip}")
        if irqchip not in MODELLED_IRQCHIPS:
            raise CmdlineError(f"irqchip {irqchip} is not modelled (only a GICv3 without ITS): use --irqchip gicv3")

        transport = DEFAULT_VIRTIO_TRANSPORT if args.virtio_transport is None else args.virtio_transport
        if transport not in VIRTIO_TRANSPORTS:
            raise CmdlineError(f"virtio transport {transport!r} is not available: use mmio or mmio-legacy")

        kaslr_seed = None
        if args.kaslr_seed is not None:
            kaslr_seed = _int(args.kaslr_seed, "KASLR seed", 0)
            if not 0 <= kaslr_seed < 1 << 64:
                raise CmdlineError(f"KASLR seed {args.kaslr_seed} does not fit in 64 bits")

        token_format = getattr(args, "token_format", None) or "399"
        if token_format not in TOKEN_FORMATS:
            raise CmdlineError(f"unknown token format {token_format!r}: use 399 or 907")
        profile = getattr(args, "token_profile", None) or "realm#1.0.0"
        if profile not in REALM_PROFILES_BY_NAME:
            raise CmdlineError(f"unknown realm token profile {profile!r}: use realm#1.0.0 or realm#2.0.0")

        if getattr(args, "force_pci", False):
            raise CmdlineError("--force-pci: no PCI bus is modelled; virtio devices use virtio-mmio")
        notes = [f"{flag}: accepted, changes nothing ({what})"
                 for flag, dest, what in IGNORED_FLAGS + IGNORED_DEBUG_FLAGS if getattr(args, dest, False)]
        for flag, dest, what in (("--vcpu-affinity", "vcpu_affinity", "the vCPUs run in the VMM's own thread"),
                                 ("--debug-iodelay", "debug_iodelay", "no I/O delay is emulated")):
            if getattr(args, dest, None) is not None:
                notes.append(f"{flag}: accepted, changes nothing ({what})")
        networks = parse_networks(args.networks)
        if args.virtio_transport is None and (args.shares_9p or any(n.mode != "none" for n in networks)):
            notes.append("--virtio-transport not given: the virtio devices use mmio (kvmtool's default, pci, is not "
                         "modelled) and no default NIC is added; kvmtool's equivalent adds --virtio-transport mmio"
                         + ("" if networks else " -n mode=none"))
        trace = parse_trace(args.trace) | ({"mmio"} if getattr(args, "debug_mmio", False) else set())

        return cls(
            kernel=args.kernel,
            initrd=args.initrd,
            params=check_params(args.params or ""),
            nrcpus=nrcpus,
            ram_size=ram_size,
            ram_addr=ram_addr,
            realm=realm,
            platform=platform,
            measurement_algo=algo,
            realm_pv=realm_pv,
            sve_vl=sve_vl,
            sve_flag=sve_flag,
            disable_sve=disable_sve,
            pmu_counters=pmu_counters,
            pmu=bool(getattr(args, "pmu", False)),
            console=console,
            console_option=args.console,
            virtio_transport_option=args.virtio_transport,
            nodefaults=bool(args.nodefaults),
            loglevel=loglevel,
            dump_dtb=args.dump_dtb,
            trace=trace,
            shares_9p=parse_shares(args.shares_9p),
            networks=networks,
            disks=tuple(_nonempty(d, "-d/--disk") for d in args.disks),
            irqchip=irqchip,
            kaslr_seed=kaslr_seed,
            virtio_transport=transport,
            token_format=TOKEN_FORMATS[token_format],
            realm_profile=REALM_PROFILES_BY_NAME[profile],
            notes=tuple(notes),
            hostile=_attacks(getattr(args, "hostile", [])),
        )


def parse_run_args(argv: Sequence[str]) -> RunConfig:
    return RunConfig.from_args(run_parser().parse_args(list(argv)))


def check_params(text: str) -> str:
    """The kernel command line is text: bytes that are not UTF-8 and control characters other
    than tab and newline (which separate words, as spaces do) are refused."""
    for i, ch in enumerate(text):
        if "\udc80" <= ch <= "\udcff":
            raise CmdlineError(f"-p: byte {ord(ch) - 0xDC00:#04x} at offset {i} is not UTF-8 text")
        if (ord(ch) < 0x20 and ch not in "\t\n") or 0x7F <= ord(ch) < 0xA0:
            raise CmdlineError(f"-p: control character {ord(ch):#04x} at offset {i}")
    return text


def _names(values: Sequence[str], known: Sequence[str], unknown: str) -> frozenset[str]:
    """Comma-separated names from repeatable flags, each one of `known`."""
    names: set[str] = set()
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if name not in known:
                raise CmdlineError(unknown.format(name=repr(name), known=",".join(known)))
            names.add(name)
    return frozenset(names)


def parse_trace(values: Sequence[str]) -> frozenset[str]:
    return _names(values, TRACE_TOPICS, "Unknown trace topic {name}: use {known}")


def parse_realm_pv(text: str) -> bytes:
    """`--realm-pv HEX`: the RPV as hex digits (optionally 0x-prefixed), at most 64 bytes;
    `token create --rpv` and reference values spell it the same way. (kvmtool copies the
    string's characters; a hex value says exactly which bytes the token will carry.)"""
    digits = text.removeprefix("0x")
    if not digits or len(digits) % 2 or not all(c in "0123456789abcdefABCDEF" for c in digits):
        raise CmdlineError(f"--realm-pv {text!r}: not an even number of hex digits")
    rpv = bytes.fromhex(digits)
    if len(rpv) > RPV_SIZE:
        raise CmdlineError(f"Invalid size for Realm Personalization Value: {len(rpv)} bytes, at most {RPV_SIZE}")
    return rpv


NINEP_TAG_MAX = 32  # MAX_TAG_LEN of QEMU's virtio-9p
_NINEP_TAG = re.compile(r"[A-Za-z0-9_.-]+")


def parse_9p(arg: str) -> NinePShare:
    """`dir[,tag]`; the tag defaults to kvm_9p. The directory is not checked here. A tag is
    at most 32 characters of letters, digits, `_`, `.` and `-`: the kernel option
    `9p=TAG:/PATH[,TAG:/PATH]` could not name one holding `,` or `:`."""
    path, comma, tag = arg.partition(",")
    if not path:
        raise CmdlineError(f"--9p {arg!r}: missing directory")
    if comma and not tag:
        raise CmdlineError(f"--9p {arg!r}: empty mount tag")
    if comma and not _NINEP_TAG.fullmatch(tag):
        raise CmdlineError(f"--9p {arg!r}: mount tag {tag!r} may hold only letters, digits, '_', '.' and '-'")
    if len(tag) > NINEP_TAG_MAX:
        raise CmdlineError(f"--9p {arg!r}: mount tag longer than {NINEP_TAG_MAX} characters")
    return NinePShare(path, tag or DEFAULT_9P_TAG)


def parse_shares(args: Sequence[str]) -> tuple[NinePShare, ...]:
    shares = tuple(parse_9p(a) for a in args)
    tags = [s.tag for s in shares]
    if dup := next((t for t in tags if tags.count(t) > 1), None):
        raise CmdlineError(f"--9p: mount tag {dup!r} is given twice")
    return shares


def parse_networks(args: Sequence[str]) -> tuple[NetParams, ...]:
    nets = [parse_network(arg, index) for index, arg in enumerate(args)]
    if sum(net.mode == "user" for net in nets) > 1:
        raise CmdlineError("Only one usermode network device allowed at a time")
    return tuple(nets)


def parse_network(arg: str, index: int = 0) -> NetParams:
    """One -n argument, tokenised as kvmtool does: alternating keys and values split on ',' and
    '='. A trailing key without a value (e.g. the bare word `virtio`) is ignored."""
    tokens = [t for t in re.split(r"[,=]", arg) if t]
    mac_base, last = DEFAULT_GUEST_MAC.rsplit(":", 1)
    values: dict[str, object] = {"guest_mac": f"{mac_base}:{(int(last, 16) + index) & 0xFF:02x}"}
    forwards: list[HostForward] = []
    for key, value in zip(tokens[0::2], tokens[1::2], strict=False):
        if key not in NET_KEYS:
            raise CmdlineError(f"Unknown network parameter {key}")
        if key == "hostfwd":
            forwards.append(parse_hostfwd(value))
            continue
        if key == "mode" and value not in NET_MODES:
            raise CmdlineError(f"Unknown network mode {value}, please use user, tap or none")
        if key in ("guest_ip", "host_ip"):
            try:
                ipaddress.IPv4Address(value)
            except ValueError:
                raise CmdlineError(f"Invalid {key} {value!r}") from None
        if key == "guest_mac" and not _MAC.fullmatch(value):
            raise CmdlineError(f"Invalid guest_mac {value!r}")
        if key == "trans" and value not in NET_TRANSPORTS:
            raise CmdlineError(f"Unknown virtio transport {value!r}")
        if key in ("vhost", "fd", "mq"):
            values[key] = _int(value, key)
        else:
            values[key] = value
    net = NetParams(**values)  # type: ignore[arg-type]
    if net.mode == "user":
        guest, host = ipaddress.IPv4Address(net.guest_ip), ipaddress.IPv4Address(net.host_ip)
        if guest == host:
            raise CmdlineError(f"-n: host_ip and guest_ip are both {guest}")
        if ipaddress.IPv4Network(f"{guest}/24", strict=False) != ipaddress.IPv4Network(f"{host}/24", strict=False):
            raise CmdlineError(f"-n: host_ip {host} is not in guest_ip {guest}'s /24 network (the DHCP lease)")
    if net.mode == "tap":
        if "guest_ip" in values:
            raise CmdlineError("-n guest_ip= is the user-mode network's DHCP lease; with mode=tap the guest "
                               "takes ip= from its command line or DHCP on the tap's network")
        if "host_ip" in values and (net.tapif is not None or net.script != "none" or net.fd is not None):
            raise CmdlineError("-n host_ip= is given only to a tap the VMM creates (script=none, no tapif or fd)")
    if forwards:
        if net.mode != "user":
            raise CmdlineError("hostfwd needs a user-mode NIC (mode=user)")
        for fwd in forwards:
            if fwd.guest_addr is not None and fwd.guest_addr != net.guest_ip:
                raise CmdlineError(f"hostfwd guest address {fwd.guest_addr} is not the NIC's guest_ip {net.guest_ip}")
        seen = [(f.host_addr, f.host_port) for f in forwards]
        if len(set(seen)) != len(seen):
            raise CmdlineError("hostfwd: the same host address and port is forwarded twice")
        net = dataclasses.replace(net, hostfwd=tuple(forwards))
    return net


_HOSTFWD = re.compile(r"(?P<proto>[a-z]*):(?P<haddr>[^:]*):(?P<hport>[^-]*)-(?P<gaddr>[^:]*):(?P<gport>.*)")


def parse_hostfwd(text: str) -> HostForward:
    """`tcp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT`; HOSTADDR defaults to 127.0.0.1 and must
    be a loopback address (127.0.0.0/8): the guest's port is never exposed beyond this host."""
    m = _HOSTFWD.fullmatch(text)
    if m is None:
        raise CmdlineError(f"Invalid hostfwd {text!r}: use tcp:127.0.0.1:HOSTPORT-:GUESTPORT")
    proto = m["proto"] or "tcp"
    if proto != "tcp":
        raise CmdlineError(f"hostfwd {text!r}: only tcp forwarding is available")
    host_addr = m["haddr"] or "127.0.0.1"
    try:
        loopback = ipaddress.IPv4Address(host_addr).is_loopback
    except ValueError:
        raise CmdlineError(f"hostfwd {text!r}: invalid host address {host_addr!r}") from None
    if not loopback:
        raise CmdlineError(f"hostfwd {text!r}: host address {host_addr} is not a loopback address (127.0.0.0/8)")
    guest_addr = m["gaddr"] or None
    if guest_addr is not None:
        try:
            ipaddress.IPv4Address(guest_addr)
        except ValueError:
            raise CmdlineError(f"hostfwd {text!r}: invalid guest address {guest_addr!r}") from None
    ports = []
    for what, raw in (("host", m["hport"]), ("guest", m["gport"])):
        port = _int(raw, f"hostfwd {what} port") if raw.isdigit() else None
        if port is None or not 1 <= port <= 65535:
            raise CmdlineError(f"hostfwd {text!r}: invalid {what} port {raw!r}")
        ports.append(port)
    return HostForward(host_addr, ports[0], ports[1], guest_addr, proto)


def _attacks(values: Sequence[str]) -> frozenset[str]:
    from .hostile import ATTACKS

    return _names(values, tuple(ATTACKS), "--hostile: unknown attack {name} (one of {known})")


def _int(text: str, what: str, base: int = 10) -> int:
    try:
        return int(text, base)
    except (TypeError, ValueError):
        raise CmdlineError(f"Invalid {what}: {text!r}") from None


def _nonempty(text: str, flag: str) -> str:
    if not text:
        raise CmdlineError(f"{flag} needs a path")
    return text
