"""`make coverage` sees guest code that ran inside a realm: the unikernel's modules run
under `image://<member>` names, and tests/coverage_support/image_files.py maps each back to
src/unirealm/<member> (and leaves alone a name it cannot map)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

coverage = pytest.importorskip("coverage", reason="coverage is in the test extras")

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("image_files", ROOT / "tests/coverage_support/image_files.py")
assert _spec is not None and _spec.loader is not None
image_files = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(image_files)


def test_image_names_map_to_their_sources() -> None:
    plugin = image_files.ImageFiles()
    tracer = plugin.file_tracer(f"{ROOT}/image:/guest/fdt.py")  # coverage's canonical form of image://guest/fdt.py
    assert tracer is not None and tracer.source_filename() == str(ROOT / "src/unirealm/guest/fdt.py")
    same = plugin.file_tracer(str(ROOT / "src/unirealm/guest/fdt.py"))  # the checkout's files: as they are
    assert same is not None and same.source_filename() == str(ROOT / "src/unirealm/guest/fdt.py")
    assert plugin.file_tracer("/usr/lib/python3/dist-packages/x.py") is None  # anything else: not ours
    assert plugin.file_tracer(f"{ROOT}/image:/app/hello") is None  # no source to map to


def test_code_run_under_an_image_name_is_reported_on_the_source(tmp_path: Path) -> None:
    config = tmp_path / "cov.toml"
    config.write_text(f'[tool.coverage.run]\nsource = ["{ROOT / "src/unirealm"}"]\nplugins = ["image_files"]\n')
    source = ROOT / "src/unirealm/guest/systable.py"
    # In a process of its own: a Coverage object made here would stop `make coverage`'s own
    # measurement of this one from being saved.
    script = (f"import coverage\ncov = coverage.Coverage(config_file={str(config)!r}, "
              f"data_file={str(tmp_path / '.coverage')!r})\ncov.start()\n"
              f"exec(compile(open({str(source)!r}, 'rb').read(), 'image://guest/systable.py', 'exec'), "
              f"{{'__name__': 'imaged'}})\ncov.stop()\ncov.save()\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    # tests/coverage_support: where coverage finds the plugin
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests/coverage_support"), str(ROOT / "src")])
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=tmp_path, timeout=120)
    data = coverage.CoverageData(basename=str(tmp_path / ".coverage"))
    data.read()
    assert str(source) in data.measured_files()
    assert len(data.lines(str(source)) or []) > 20  # the module's top level ran, on the source's line numbers
    assert all("image:" not in f for f in data.measured_files())
