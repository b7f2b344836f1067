"""A coverage.py plugin for the kernel inside an image: machine/pykernel.py compiles the
image's modules under `image://guest/...` and `image://arch/...` names (the image, not the
source tree, is what runs), so coverage would see files that do not exist. The image's files
are src/unirealm/guest and src/unirealm/arch as built (host/image.py payload_zip), so each
`image://` name is traced and reported as that source file. `make coverage` loads it
(pyproject.toml [tool.coverage.run] plugins)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coverage.plugin import CoveragePlugin, FileReporter, FileTracer

SOURCE_ROOT = Path(__file__).resolve().parents[1] / "src" / "unirealm"
PACKAGES = ("guest", "arch")


def image_source(filename: str) -> str | None:
    """The source file an image module's code name stands for, or None if it is not one.
    coverage hands the name over made absolute (`image://x` becomes `<cwd>/image:/x`)."""
    _, sep, member = filename.partition("image:/")
    member = member.lstrip("/")
    if not sep or member.split("/", 1)[0] not in PACKAGES or not member.endswith(".py"):
        return None
    path = SOURCE_ROOT / member
    return str(path) if path.is_file() else None


class _ImageFile(FileTracer):
    def __init__(self, source: str) -> None:
        self._source = source

    def source_filename(self) -> str:
        return self._source


class ImageSources(CoveragePlugin):
    def file_tracer(self, filename: str) -> FileTracer | None:
        source = image_source(filename)
        return _ImageFile(source) if source is not None else None

    def file_reporter(self, filename: str) -> FileReporter | str:
        return "python"  # the source file itself, reported as any other Python file


def coverage_init(reg: Any, options: dict[str, str]) -> None:
    reg.add_file_tracer(ImageSources())
