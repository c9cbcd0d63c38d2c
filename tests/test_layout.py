"""The layout's rules, checked on the source tree (ARCHITECTURE.md states
them): the core never includes Python.h, the binding files include and call
each other without a loop and name their functions npy_*, no Python module
of the package, the tests or the benchmarks is over ~600 lines or lacks its
opening docstring, the demo and the benchmarks import no test module, and
ARCHITECTURE.md names files that exist."""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORE = ROOT / "csrc" / "core"
BINDING = ROOT / "csrc" / "py"
INCLUDE = re.compile(r'^\s*#\s*include\s+[<"]([^>"]+)[>"]', re.M)


def test_the_core_never_includes_python():
    for f in sorted(CORE.glob("*.[ch]")):
        included = INCLUDE.findall(f.read_text())
        assert not [i for i in included if "Python" in i or i.startswith("../py/")], f.name


def _binding_graph():
    """file stem -> stems it includes (x.c and x.h are one node)."""
    graph = {}
    for f in sorted(BINDING.glob("*.[ch]")):
        deps = graph.setdefault(f.stem, set())
        for inc in INCLUDE.findall(f.read_text()):
            if "/" not in inc and (BINDING / inc).exists() and pathlib.Path(inc).stem != f.stem:
                deps.add(pathlib.Path(inc).stem)
    return graph


def test_binding_files_form_no_include_loop():
    graph = _binding_graph()
    assert {"module", "pool", "connection", "transaction", "failover", "pybackend"} <= set(graph)
    state = {}

    def visit(node, path):
        if state.get(node) == "done":
            return
        assert state.get(node) != "active", "include loop: " + " -> ".join(path + [node])
        state[node] = "active"
        for dep in sorted(graph[node]):
            visit(dep, path + [node])
        state[node] = "done"

    for node in graph:
        visit(node, [])
    # module.c is the root: nothing includes it
    assert not [n for n, deps in graph.items() if "module" in deps]


def test_binding_calls_follow_the_includes():
    # A call into another binding file needs its header: so a call loop
    # would be an include loop.  Every non-static binding function is
    # declared in the header of the file that defines it and named npy_*.
    defined = {}
    for f in sorted(BINDING.glob("*.c")):
        for name in re.findall(r"^(?!static)[A-Za-z_][\w \*]*?\b(\w+)\(", f.read_text(), re.M):
            if name != "PyInit__native":
                defined[name] = f.stem
    assert len(defined) > 40
    for name, stem in defined.items():
        assert name.startswith("npy_"), f"{stem}.c: {name} (binding functions are npy_*, the core's nc_*)"
        header = BINDING / f"{stem}.h"
        assert header.exists() and re.search(rf"\b{name}\(", header.read_text()), f"{name} not in {stem}.h"


def test_package_modules_are_small_and_say_what_they_own():
    # the same rule for the tests and the benchmarks
    files = (sorted((ROOT / "noodlecore").rglob("*.py")) + sorted((ROOT / "tests").glob("*.py"))
             + sorted((ROOT / "bench").glob("*.py")))
    assert len([f for f in files if f.parent.name in ("tests", "bench")]) > 20
    for f in files:
        lines = f.read_text().count("\n")
        assert lines <= 620, f"{f.relative_to(ROOT)}: {lines} lines"
        if f.name != "__init__.py" or lines > 5:
            assert ast.get_docstring(ast.parse(f.read_text())), f"{f.relative_to(ROOT)} has no docstring"


def test_demo_and_benchmarks_import_no_test_module():
    test_modules = {p.stem for p in (ROOT / "tests").glob("*.py")}
    for f in sorted((ROOT / "bench").glob("*.py")) + sorted((ROOT / "noodlecore").rglob("*.py")):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top != "tests" and top not in test_modules, f"{f.relative_to(ROOT)} imports {name}"


def test_architecture_names_files_that_exist():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    paths = set(re.findall(r"`((?:csrc|noodlecore|tests|bench)/[\w./-]+)`", text))
    assert len(paths) > 20
    missing = sorted(p for p in paths if not (ROOT / p.rstrip("/")).exists())
    assert not missing, missing
