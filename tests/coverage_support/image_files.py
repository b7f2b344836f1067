"""A coverage.py plugin: the unikernel runs from its image under `image://<member>` file
names (machine/pykernel.py imports the measured bytes, not the checkout); this maps each
such module back to the source file it was built from, `src/unirealm/<member>`, so guest
code run inside realms is reported with the rest (`make coverage`)."""

from __future__ import annotations

from pathlib import Path

import coverage
from coverage.plugin_support import Plugins

SRC = Path(__file__).resolve().parents[2] / "src" / "unirealm"
MARK = "image:"  # coverage hands plugins canonical names: "image://guest/x.py" arrives as ".../image:/guest/x.py"


class ImageFiles(coverage.CoveragePlugin):
    def file_tracer(self, filename: str) -> coverage.FileTracer | None:
        at = filename.find(MARK)
        if at < 0:
            # The checkout's own files are this plugin's too: `coverage combine` merges a file's
            # data only when every process measured it with the same tracer.
            return _Tracer(filename) if Path(filename).is_relative_to(SRC) else None
        path = SRC / filename[at + len(MARK) :].lstrip("/")
        return _Tracer(str(path)) if path.is_file() else None

    def file_reporter(self, filename: str) -> str:
        return "python"  # the mapped files are ordinary Python sources


class _Tracer(coverage.FileTracer):
    def __init__(self, path: str) -> None:
        self.path = path

    def source_filename(self) -> str:
        return self.path


def coverage_init(reg: Plugins, options: dict[str, str]) -> None:
    reg.add_file_tracer(ImageFiles())
