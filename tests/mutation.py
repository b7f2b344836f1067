"""`make mutate`: mutmut over rmm/, attest/, machine/ and host/devices/ with their unit tests,
in a scratch copy of the tree (build/mutate), so the worktree is never touched.

    python tests/mutation.py [--only GLOB ...] [--tests PATH ...] [--children N]

--only narrows the files mutated (mutmut's only_mutate globs, e.g. src/unirealm/rmm/s2tte.py)
and --tests the test runner's selection (default: the four packages and tests/rmm,
tests/attest, tests/machine, tests/host). Prints killed/total per module and writes
build/mutate/score.json; `mutmut results` / `mutmut show NAME` inside build/mutate list and
show the survivors."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCOPE = ["src/unirealm/rmm/*", "src/unirealm/attest/*", "src/unirealm/machine/*", "src/unirealm/host/devices/*"]
TESTS = ["tests/rmm", "tests/attest", "tests/machine", "tests/host"]


def mutmut_table(only: list[str], tests: list[str]) -> str:
    def toml_list(items: list[str]) -> str:
        return "[" + ", ".join(json.dumps(i) for i in items) + "]"

    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["src/unirealm"]\n'
        f"only_mutate = {toml_list(only)}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-m", "not e2e"]\n'
        'also_copy = ["tests"]\n'
    )


def workspace(work: Path, only: list[str], tests: list[str]) -> Path:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "src", work / "src", ignore=ignore)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
    project = (ROOT / "pyproject.toml").read_text()
    project = re.sub(r"\n\[tool\.mutmut\]\n(?:[^\[].*\n|\n)*", "\n", project)  # replaced below
    (work / "pyproject.toml").write_text(project + mutmut_table(only, tests))
    return work


def score(work: Path, mutmut: str) -> dict[str, dict[str, int]]:
    out = subprocess.run([mutmut, "results", "--all", "true"], cwd=work, capture_output=True, text=True,
                         check=True).stdout
    by_module: dict[str, Counter[str]] = {}
    for line in out.splitlines():
        name, _, status = line.strip().partition(": ")
        if "__mutmut_" not in name:
            continue
        module = name.split(".x")[0] if ".x" in name else name.rsplit(".", 1)[0]
        by_module.setdefault(module, Counter())[status.strip()] += 1
    return {m: dict(c) for m, c in sorted(by_module.items())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", default=SCOPE, help="files to mutate (globs)")
    ap.add_argument("--tests", nargs="+", default=TESTS, help="the tests that must kill the mutants")
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "mutate", help="the scratch copy (replaced)")
    ap.add_argument("--children", type=int, default=os.cpu_count() or 1, help="mutants run in parallel")
    args = ap.parse_args()
    bad = [g for g in args.only if not list(ROOT.glob(g))]
    if bad:
        print(f"mutate: no file matches {', '.join(bad)}", file=sys.stderr)
        return 2
    mutmut = shutil.which("mutmut", path=str(Path(sys.executable).parent)) or shutil.which("mutmut")
    if mutmut is None:
        print("mutate: mutmut is not installed (pip install -e '.[test]')", file=sys.stderr)
        return 2
    work = workspace(args.work.resolve(), args.only, args.tests)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    vectors = ROOT.parent / "shared" / "vectors"  # where tests/attest looks from the real tree
    if "UNIREALM_VECTORS" not in env and vectors.is_dir():
        env["UNIREALM_VECTORS"] = str(vectors)
    run = subprocess.run([mutmut, "run", "--max-children", str(args.children)], cwd=work, env=env,
                         stdout=subprocess.DEVNULL)
    if run.returncode != 0:
        print(f"mutate: mutmut run failed ({run.returncode}); see {work}/mutants", file=sys.stderr)
        return 1
    table = score(work, mutmut)
    (work / "score.json").write_text(json.dumps(table, indent=2) + "\n")
    for module, counts in table.items():
        total = sum(counts.values())
        killed = counts.get("killed", 0) + counts.get("timeout", 0)
        print(f"{module}: {killed}/{total} killed ({100 * killed / total:.0f} %), "
              + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if s not in ("killed", "timeout")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
