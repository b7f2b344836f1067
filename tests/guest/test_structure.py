"""The guest's structure: no import cycle among its modules, every syscall registered by the
one subsystem that implements it, the state fork copies is one object copied as a whole
(module size: tests/test_layers.py)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

from unirealm.guest import syscalls as sc
from unirealm.guest.devfiles import NullFile
from unirealm.guest.fdtable import FdTable
from unirealm.guest.process import ProcState

SRC = Path(__file__).resolve().parents[2] / "src"
GUEST = SRC / "unirealm" / "guest"


# --- imports -----------------------------------------------------------------------------
def _runtime_imports(tree: ast.Module) -> list[ast.ImportFrom | ast.Import]:
    """Every import statement that runs (module level or in a function), leaving out
    `if TYPE_CHECKING:` blocks (annotations only)."""
    found: list[ast.ImportFrom | ast.Import] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """module -> the modules of `package` it imports when it runs."""
    files = {".".join((package, *p.relative_to(root).with_suffix("").parts)).removesuffix(".__init__"): p
             for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif node.level == 0:
                targets = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join([*base, *([node.module] if node.module else [])])
                targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            deps |= {t for t in targets if t in files and t != name}
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_in_the_guest() -> None:
    graph = import_graph(GUEST, "unirealm.guest")
    assert len(graph) > 30 and graph["unirealm.guest.fork"] >= {"unirealm.guest.process"}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_process_imports_no_syscall_module() -> None:
    graph = import_graph(GUEST, "unirealm.guest")
    reach: set[str] = set()
    todo = ["unirealm.guest.process"]
    while todo:
        for dep in graph[todo.pop()] - reach:
            reach.add(dep)
            todo.append(dep)
    handlers = {f"unirealm.guest.{m}" for m in ("syscalls", "fileio", "namei", "poll", "mman", "fork", "procinfo",
                                                  "threads", "clock", "signals", "sysctx")}
    assert not reach & handlers


def test_the_cycle_check_finds_cycles(tmp_path: Path) -> None:
    pkg = tmp_path / "p"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .c import x\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    assert find_cycle(import_graph(pkg, "p")) is None  # a type-only import does not run
    (pkg / "c.py").write_text("import p.a\n")
    assert find_cycle(import_graph(pkg, "p")) == ["p.a", "p.b", "p.c", "p.a"]


# --- syscall registration ----------------------------------------------------------------
def test_every_handler_is_registered_by_one_subsystem() -> None:
    table = sc.Syscalls.TABLE
    subsystem = {sc.NAMES[nr]: sub for nr, (sub, _) in table.items()}
    assert {subsystem[n] for n in ("openat", "read", "newfstatat", "ppoll", "epoll_pwait")} == {"files"}
    assert subsystem["mmap"] == subsystem["brk"] == "memory"
    assert subsystem["clone"] == subsystem["execve"] == subsystem["wait4"] == subsystem["getpid"] == "process"
    assert subsystem["futex"] == subsystem["set_tid_address"] == "threads"
    assert subsystem["clock_gettime"] == subsystem["nanosleep"] == "time"
    assert subsystem["rt_sigaction"] == subsystem["kill"] == "signals"
    assert subsystem["socket"] == subsystem["accept4"] == "sockets"
    # no handler method is left out of the table
    methods = {m for _, m in table.values()}
    unregistered = {a for a in dir(sc.Syscalls) if a.startswith("sys_")} - methods
    assert not unregistered
    assert len(table) == len(set(table)) and len({n for n in subsystem}) == len(table)


# --- fork copies the process state as a whole --------------------------------------------------
def test_fork_copies_the_state_as_a_whole() -> None:
    parent = ProcState(["/bin/sh", "-c"], ["A=1"], "/bin/sh", 5, cwd="/tmp", umask=0o077,
                       sigactions={2: b"x" * 32}, entry=0x1000, auxv={"phdr": 64})
    f = NullFile(None, 0, "/dev/null")
    parent.fds.install(f, cloexec=True)
    child = parent.fork()
    assert child == parent or all(getattr(child, x.name) == getattr(parent, x.name)
                                  for x in dataclasses.fields(ProcState) if x.name != "fds")
    for x in dataclasses.fields(ProcState):
        value = getattr(parent, x.name)
        if isinstance(value, list | dict | FdTable):  # every container is the child's own
            assert getattr(child, x.name) is not value, x.name
    assert f.refs == 2 and child.fds.get(0) is not parent.fds.get(0)
    assert child.fds.file(0) is f and child.fds.get(0).cloexec  # type: ignore[union-attr]
    child.argv.append("x")
    child.sigactions.clear()
    child.fds.close(0)
    child.cwd = "/"
    assert parent.argv == ["/bin/sh", "-c"] and 2 in parent.sigactions and 0 in parent.fds and parent.cwd == "/tmp"
    assert f.refs == 1
