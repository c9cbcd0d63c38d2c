"""Typing: the package is typed (py.typed), the native module's stub
(noodlecore/_native.pyi) says what the built module has, and ``mypy --strict``
passes on every Python example of the README, run against the installed
package as a user's code would be.  A control snippet with wrong argument
types must fail, so the stub is really what mypy reads (an untyped module
would let anything through)."""

import ast
import enum
import importlib.metadata
import os
import pathlib
import re
import subprocess
import sys

import pytest

import noodlecore
from noodlecore import _native
from noodlecore.database import FailoverMode, FailoverPolicy, FailoverState

ROOT = pathlib.Path(__file__).resolve().parent.parent
PKG = pathlib.Path(noodlecore.__file__).resolve().parent


def test_version_is_the_packaging_metadata():
    assert re.fullmatch(r"\d+\.\d+\.\d+", noodlecore.__version__)
    assert importlib.metadata.version("noodlecore") == noodlecore.__version__


def _stub():
    return ast.parse((PKG / "_native.pyi").read_text())


def _defined(body):
    names = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


# Names only the stub has: type aliases for signatures, and the waiter's
# class, which the module returns but does not export.
STUB_ONLY = {"Params", "RowFormat", "EventTuple", "_EventWaiter"}


def test_the_stub_names_what_the_module_has():
    tree = _stub()
    stub = _defined(tree.body) - STUB_ONLY
    module = {n for n in dir(_native) if not n.startswith("__")}
    assert stub == module, "only in the stub: %s; only in the module: %s" % (stub - module, module - stub)
    for node in tree.body:
        if not isinstance(node, ast.ClassDef) or node.name in STUB_ONLY:
            continue
        cls = getattr(_native, node.name)
        if issubclass(cls, BaseException):
            continue
        declared = _defined(node.body) - {"__init__"}
        have = {n for n in vars(cls) if not n.startswith("__") or n in ("__enter__", "__exit__")}
        assert declared == have, "%s: only in the stub %s, only in the module %s" % (
            node.name, declared - have, have - declared)


def test_the_enums_type_checkers_see_are_the_cores():
    """failover_enums.py shows mypy the enums' members in an `if TYPE_CHECKING`
    block (at run time they are made from _native's tuples): same names, same
    order, same values."""
    source = (PKG / "database" / "failover_enums.py").read_text()
    seen = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for cls in node.body:
                if isinstance(cls, ast.ClassDef):
                    seen[cls.name] = [(a.targets[0].id, a.value.value) for a in cls.body
                                      if isinstance(a, ast.Assign)]
    for runtime in (FailoverMode, FailoverPolicy, FailoverState):
        assert issubclass(runtime, enum.Enum)
        assert seen[runtime.__name__] == [(m.name, m.value) for m in runtime], runtime.__name__


@pytest.fixture(scope="module")
def mypy_run(tmp_path_factory):
    """One mypy --strict run (it takes seconds) over the README's examples,
    the typed usage below and the control: (output, the files that must pass)."""
    try:
        import mypy  # noqa: F401
    except ImportError:
        pytest.fail("mypy is missing: pip install --no-deps -r tests/requirements-packaging.txt")
    work = tmp_path_factory.mktemp("mypy")
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks
    clean = []
    for i, code in enumerate(blocks):
        # PG_DSN is given to the examples by tests/test_readme.py
        (work / ("readme_example_%d.py" % i)).write_text('PG_DSN = "postgresql://app@localhost/app"\n' + code)
        clean.append("readme_example_%d.py" % i)
    (work / "typed_usage.py").write_text(TYPED_USAGE)
    clean.append("typed_usage.py")
    (work / "control.py").write_text(CONTROL)
    env = dict(os.environ)
    for var in ("PYTHONPATH", "MYPYPATH", "PYTHONMALLOC"):   # the installed package, as a user has it
        env.pop(var, None)
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                           "--cache-dir", str(work / ".mypy_cache"), "--no-color-output",
                           "--show-error-codes", *clean, "control.py"], capture_output=True, text=True,
                          timeout=300, cwd=work, env=env)
    out = proc.stdout + proc.stderr
    # exit 1: errors found (the control's); anything else is mypy failing
    assert proc.returncode == 1, out
    assert "in 1 file (checked %d source files)" % (len(clean) + 1) in proc.stdout, out
    return out, clean


@pytest.mark.once
def test_readme_examples_pass_mypy_strict(mypy_run):
    out, clean = mypy_run
    for name in clean:
        assert not re.search(r"^%s:\d+: (error|note)" % re.escape(name), out, re.M), out


# Typed code a user writes: a return inside `with` blocks (their __exit__
# never swallows an exception, so no "missing return"), the error attributes.
TYPED_USAGE = '''\
from typing import Any, Optional
from noodlecore.database import DatabaseConnectionPool, Error, PooledConnection


def first_row(pool: DatabaseConnectionPool, sql: str) -> Any:
    with pool.get_connection(timeout=1.5) as conn:
        with conn.transaction():
            return conn.execute_query(sql, row_format="tuple")[0]


def safe_to_retry(exc: Error) -> bool:
    sent: Optional[bool] = exc.statement_sent
    return sent is False or exc.not_applied


def borrowed(pool: DatabaseConnectionPool) -> PooledConnection:
    return pool.acquire(timeout=None)
'''


CONTROL = '''\
from noodlecore.database import DatabaseConnectionPool, FailoverMode

with DatabaseConnectionPool("sqlite:///:memory:") as pool:
    with pool.get_connection(timeout="soon") as conn:
        conn.execute_query(42)
        conn.no_such_method()
    n: str = pool.get_stats().query_count
mode = FailoverMode.FULLY_AUTOMATIC
'''


@pytest.mark.once
def test_mypy_sees_the_types(mypy_run):
    out, _clean = mypy_run
    errors = re.findall(r"^control\.py:(\d+): error: .*\[([\w-]+)\]$", out, re.M)
    assert sorted(errors) == [("4", "arg-type"), ("5", "arg-type"), ("6", "attr-defined"),
                              ("7", "assignment"), ("8", "attr-defined")], out
