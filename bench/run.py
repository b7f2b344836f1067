"""Run every benchmark and print each result as a ratio to its same-run baseline."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))

import bigxfer_bench
import console_bench
import demand_paging
import exits_bench
import guest_net_bench
import irq_bench
import isolation_bench
import launch
import net_bench
import realmnet_bench
import sqlite_bench
import svc_bench
import usernet_bench


def main() -> int:
    console = Console()
    table = Table(title=f"unirealm benchmarks on {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    for col in ("benchmark", "measured", "baseline", "ratio"):
        table.add_column(col)
    rows = launch.run()
    rows += demand_paging.run()
    rows += svc_bench.run()
    rows += console_bench.run()
    for name, module in (("sqlite", sqlite_bench), ("network", net_bench), ("user-mode network", usernet_bench),
                         ("guest network path", guest_net_bench), ("isolation", isolation_bench),
                         ("interrupts", irq_bench), ("large transfers", bigxfer_bench), ("exits", exits_bench),
                         ("realm vs plain VM", realmnet_bench)):
        try:
            rows += module.run()
        except RuntimeError as exc:
            console.print(f"[yellow]{name} benchmark skipped: {exc}")
    for name, value, base, unit in rows:
        table.add_row(name, f"{value:.4f} {unit}", f"{base:.4f} {unit}", f"{value / base:.2f}x")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
