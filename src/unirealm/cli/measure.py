"""`unirealm measure LAUNCH.json`: the RIM of a realm launch, computed offline.

LAUNCH.json holds the realm parameters and the host's operations (see
`unirealm.attest.measure` for the format and the RIPAS block-size rule). With `unirealm run`'s
flags instead (`unirealm measure --realm -k IMAGE ...`) it predicts the RIM of that launch from
the VMM's own launch plan, without running anything; that plan is kvmtool-cca's, so
`unirealm measure -c unirealm -k IMAGE kvmtool ARGS` (attest/kvmtool.py) gives the same RIM
for the same ARGS. Prints the RIM
and the measurement log, as text or `--json`; `--comid OUT.json` also writes the realm's
reference values as a CoMID for Veraison.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from unirealm.arch.rmi import RmiHashAlgorithm, RmiRecFlags
from unirealm.attest.corim import realm_comid
from unirealm.attest.measure import (
    DataOp,
    Launch,
    LaunchError,
    Operation,
    RealmParams,
    RecOp,
    RipasOp,
    load_launch,
    log_to_json,
    log_to_text,
    measure_launch,
)
from unirealm.cli.main import UsageError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("measure", help="compute the RIM of a realm launch offline")
    p.add_argument("launch", metavar="LAUNCH.json", nargs="?", help="realm parameters and host operations")
    p.add_argument("--json", action="store_true", help="print the RIM and the log as JSON")
    p.add_argument("--comid", metavar="OUT.json", help="write the realm reference values as a CoMID")
    p.add_argument("--rem-log", metavar="LOG", help="a REM measurement log: its REMs join the reference values")
    from unirealm.host.cmdline import add_run_arguments

    add_run_arguments(p)
    p.set_defaults(func=_measure)
    p.__class__ = type("MeasureParser", (_KvmtoolForm, type(p)), {})


class _KvmtoolForm(argparse.ArgumentParser):
    """`measure [HOST OPTIONS] kvmtool VMM-ARGS...` has options of its own (attest/kvmtool.py):
    the whole argument list goes there untouched."""

    def parse_known_args(  # type: ignore[override]  # argparse's overloads: this form takes the plain one
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if args is not None and "kvmtool" in args:
            return argparse.Namespace(func=_measure_kvmtool, kvmtool_argv=list(args)), []
        return super().parse_known_args(args, namespace)


def _measure_kvmtool(args: argparse.Namespace) -> int:
    import base64

    from unirealm.attest.kvmtool import measure_kvmtool

    try:
        result = measure_kvmtool(args.kvmtool_argv)
        log = measure_launch(result.launch)
    except LaunchError as exc:
        raise UsageError(str(exc)) from None
    if result.output_dtb:
        try:
            Path(result.output_dtb).write_bytes(result.dtb)
        except OSError as exc:
            raise UsageError(f"cannot write {result.output_dtb}: {exc.strerror or exc}") from None
    for name, value in (("RIM", log.digest), *((f"REM{i}", b"") for i in range(4))):
        value = value.ljust(64, b"\0")  # the RMM's 64-byte measurement registers, as the tool prints them
        print(f"{name}: {base64.b64encode(value).decode() if result.print_b64 else value.hex()}")
    return 0


def launch_of_run(args: argparse.Namespace) -> Launch:
    """The Launch `unirealm run` with these flags would carry out, from the VMM's plan."""
    from unirealm.host.cmdline import CmdlineError, RunConfig
    from unirealm.host.kvm import DataStep, RipasStep
    from unirealm.host.vmm import Vmm, VmmError

    try:
        cfg = RunConfig.from_args(args)
        for note in cfg.notes:
            print(f"unirealm measure: note: {note}", file=sys.stderr)
        if not cfg.realm:
            raise UsageError("only a realm has a RIM: add --realm")
        vmm = Vmm(cfg, io.BytesIO(), None)
    except (CmdlineError, VmmError) as exc:
        raise UsageError(str(exc)) from None
    realm = vmm.realm_config()
    params = RealmParams(
        s2sz=realm.ipa_bits,
        hash_algo=RmiHashAlgorithm(realm.hash_algo),
        num_bps=realm.num_bps - 1,
        num_wps=realm.num_wps - 1,
        pmu_num_ctrs=realm.pmu_num_ctrs,
        sve_vl=realm.sve_vl,
        flags=realm.flags,
        rpv=realm.rpv.ljust(64, b"\0"),
    )
    ops: list[Operation] = []
    for step in vmm.realm_plan():
        if isinstance(step, DataStep):
            ops.append(DataOp(step.ipa, step.content, step.measured))
        elif isinstance(step, RipasStep):
            ops.append(RipasOp(step.base, step.top))
        else:
            ops.append(RecOp(step.pc, list(step.gprs), RmiRecFlags.RUNNABLE if step.runnable else 0))
    return Launch(params, ops)


def _measure(args: argparse.Namespace) -> int:
    if (args.launch is None) == (args.kernel is None):
        raise UsageError("give either LAUNCH.json or unirealm run's flags (--realm -k IMAGE ...)")
    source = args.launch or args.kernel
    try:
        launch = load_launch(args.launch) if args.launch else launch_of_run(args)
        log = measure_launch(launch)
    except LaunchError as exc:
        raise UsageError(f"{source}: {exc}") from None
    algo = "sha-256" if len(log.digest) == 32 else "sha-512"
    rems = None
    if args.rem_log:
        from unirealm.cli.token import rems_of_log

        rems = rems_of_log(args.rem_log, algo)
    if args.comid:
        comid = realm_comid(log.digest, hash_algo=algo, rpv=launch.params.rpv, rems=rems)
        try:
            Path(args.comid).write_text(json.dumps(comid, indent=2) + "\n")
        except OSError as exc:
            raise UsageError(f"cannot write {args.comid}: {exc.strerror or exc}") from None
    if args.json:
        out = log_to_json(log)
        if rems is not None:
            out["rems"] = [r.hex() for r in rems]
        print(json.dumps(out, indent=2))
    else:
        print(f"RIM ({algo}): {log.digest.hex()}")
        for i, rem in enumerate(rems or []):
            print(f"REM{i} ({algo}): {rem.hex()}")
        print("measurement log:")
        print(log_to_text(log))
    return 0
