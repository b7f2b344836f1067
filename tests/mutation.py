"""`make mutate`: mutmut over rmm/, attest/, machine/, host/devices/ and guest/ with their unit tests,
in a scratch copy of the tree (build/mutate), so the worktree is never touched.

    python tests/mutation.py [--only GLOB ...] [--tests PATH ...] [--children N] [--sample N] [--keep]

--only narrows the files mutated (mutmut's only_mutate globs, e.g. src/unirealm/rmm/s2tte.py)
and --tests the test runner's selection (default: the five packages and tests/rmm,
tests/attest, tests/machine, tests/host, tests/guest). mutmut runs, for each mutant, only the tests of the
selection that reach its function. --sample N runs a systematic sample: every k-th mutant of
each module in source order, k = ceil(mutants / N), so each module is scored on at most N
(all of a small one); the score counts the sampled mutants only. --keep reuses the scratch
copy: its mutants and its map of tests to functions. Prints
killed/total per module and writes score.json in the scratch copy; `mutmut results` /
`mutmut show NAME` there list and show the survivors."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCOPE = ["src/unirealm/rmm/*", "src/unirealm/attest/*", "src/unirealm/machine/*", "src/unirealm/host/devices/*",
         "src/unirealm/guest/*"]
TESTS = ["tests/rmm", "tests/attest", "tests/machine", "tests/host", "tests/guest"]


def mutmut_table(only: list[str], tests: list[str]) -> str:
    def toml_list(items: list[str]) -> str:
        return "[" + ", ".join(json.dumps(i) for i in items) + "]"

    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["src/unirealm"]\n'
        f"only_mutate = {toml_list(only)}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
        # The tests of the source files themselves (their length, the image's imports, the image's coverage
        # map) see mutmut's trampolines, not the guest: they are not the tests a mutant must meet.
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-m", "not e2e", '
        '"--ignore=tests/guest/test_structure.py", "--ignore=tests/guest/test_measured_imports.py", '
        '"--ignore=tests/guest/test_image_coverage.py"]\n'
        'also_copy = ["tests", "examples"]\n'
    )


def workspace(work: Path, only: list[str], tests: list[str]) -> Path:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "src", work / "src", ignore=ignore)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
    shutil.copytree(ROOT / "examples", work / "examples", ignore=ignore)  # sources tests build from
    project = (ROOT / "pyproject.toml").read_text()
    project = re.sub(r"\n\[tool\.mutmut\]\n(?:[^\[].*\n|\n)*", "\n", project)  # replaced below
    (work / "pyproject.toml").write_text(project + mutmut_table(only, tests))
    return work


def results(work: Path, mutmut: str) -> dict[str, str]:
    """mutant name -> status, in mutmut's (source) order."""
    out = subprocess.run([mutmut, "results", "--all", "true"], cwd=work, capture_output=True, text=True,
                         check=True).stdout
    found = {}
    for line in out.splitlines():
        name, _, status = line.strip().partition(": ")
        if "__mutmut_" in name:
            found[name] = status.strip()
    return found


def module_of(name: str) -> str:
    return name.split(".x")[0] if ".x" in name else name.rsplit(".", 1)[0]


def sample(names: list[str], per_module: int) -> list[str]:
    """Every k-th mutant of each module (k = ceil(count / per_module)), the first included."""
    by_module: dict[str, list[str]] = defaultdict(list)
    for name in names:
        by_module[module_of(name)].append(name)
    picked = []
    for group in by_module.values():
        step = -(-len(group) // per_module)
        picked += group[::step]
    return picked


def score(statuses: dict[str, str], only: set[str] | None = None) -> dict[str, dict[str, int]]:
    by_module: dict[str, Counter[str]] = {}
    for name, status in statuses.items():
        if only is None or name in only:
            by_module.setdefault(module_of(name), Counter())[status] += 1
    return {m: dict(c) for m, c in sorted(by_module.items())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", default=SCOPE, help="files to mutate (globs)")
    ap.add_argument("--tests", nargs="+", default=TESTS, help="the tests that must kill the mutants")
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "mutate", help="the scratch copy (replaced)")
    ap.add_argument("--children", type=int, default=os.cpu_count() or 1, help="mutants run in parallel")
    ap.add_argument("--sample", type=int, default=0, metavar="N", help="at most N mutants per module (0: all)")
    ap.add_argument("--keep", action="store_true", help="reuse the scratch copy (mutants, test map)")
    args = ap.parse_args()
    bad = [g for g in args.only if not list(ROOT.glob(g))]
    if bad:
        print(f"mutate: no file matches {', '.join(bad)}", file=sys.stderr)
        return 2
    if args.sample < 0:
        print("mutate: --sample wants a positive number of mutants per module", file=sys.stderr)
        return 2
    mutmut = shutil.which("mutmut", path=str(Path(sys.executable).parent)) or shutil.which("mutmut")
    if mutmut is None:
        print("mutate: mutmut is not installed (pip install -e '.[test]')", file=sys.stderr)
        return 2
    work = args.work.resolve()
    if not (args.keep and (work / "mutants").is_dir()):
        workspace(work, args.only, args.tests)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    vectors = ROOT.parent / "shared" / "vectors"  # where tests/attest looks from the real tree
    if "UNIREALM_VECTORS" not in env and vectors.is_dir():
        env["UNIREALM_VECTORS"] = str(vectors)
    run_cmd = [mutmut, "run", "--max-children", str(args.children)]
    picked: list[str] = []
    if args.sample:
        if not (work / "mutants" / "mutmut-stats.json").exists():
            # Generate the mutants and the test-to-function map; a pattern no mutant has
            # ends mutmut before it runs any.
            subprocess.run([*run_cmd, "__no_such_mutant__"], cwd=work, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        picked = sample(list(results(work, mutmut)), args.sample)
        if not picked:
            print(f"mutate: mutmut made no mutants; see {work}/mutants", file=sys.stderr)
            return 1
    run = subprocess.run([*run_cmd, *picked], cwd=work, env=env, stdout=subprocess.DEVNULL)
    if run.returncode != 0:
        print(f"mutate: mutmut run failed ({run.returncode}); see {work}/mutants", file=sys.stderr)
        return 1
    table = score(results(work, mutmut), set(picked) if picked else None)
    (work / "score.json").write_text(json.dumps(table, indent=2) + "\n")
    for module, counts in table.items():
        total = sum(counts.values())
        killed = counts.get("killed", 0) + counts.get("timeout", 0)
        print(f"{module}: {killed}/{total} killed ({100 * killed / total:.0f} %), "
              + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if s not in ("killed", "timeout")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
