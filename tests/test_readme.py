"""Every code example in the README runs, and its first two commands are the
install+demo and the test command."""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from helpers import subprocess_env

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def python_blocks():
    text = README.read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_opens_with_the_two_commands():
    text = README.read_text()
    first = re.search(r"```sh\n(.*?)```", text, flags=re.S).group(1).strip().splitlines()
    assert first[0].startswith("pip install . && noodlecore-db demo")
    assert first[1].startswith("bash tests/run.sh")
    ci = (README.parent / ".ci" / "run").read_text()
    assert "tests/run.sh" in ci


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_example(index, pg, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = python_blocks()[index]
    namespace = {"__name__": "__readme__", "PG_DSN": pg.dsn()}
    exec(compile(code, f"README.md python block {index}", "exec"), namespace)


@pytest.mark.once
def test_readme_sqlalchemy_example(pg, tmp_path, monkeypatch):
    """The SQLAlchemy section's example (needs SQLAlchemy: only the stage
    that installs tests/requirements-sqla.txt runs it)."""
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python sqlalchemy\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1
    exec(compile(blocks[0], "README.md sqlalchemy block", "exec"), {"__name__": "__readme__", "PG_DSN": pg.dsn()})


def _env():
    return subprocess_env()


def _cli():
    script = pathlib.Path(sys.executable).parent / "noodlecore-db"
    return [str(script)] if script.exists() else [sys.executable, "-m", "noodlecore.database"]


def test_demo_command_runs_on_embedded_sqlite(tmp_path):
    proc = subprocess.run(_cli() + ["demo", "--seconds", "1", "--json"], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, env=_env())
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["failures"] == 0
    assert out["stats"]["query_count"] > 100
    assert out["stats"]["error_count"] == 0
    assert out["result"]["orders"] > 0
    human = subprocess.run(_cli() + ["demo", "--seconds", "0.5"], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path, env=_env())
    assert human.returncode == 0 and "queries:" in human.stdout


def test_query_command_and_bad_input(pg, tmp_path):
    proc = subprocess.run(_cli() + ["query", pg.dsn(), "SELECT %(a)s::int + 1 AS b", "--param", "a=41",
                                    "--json"], capture_output=True, text=True, timeout=60, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [{"b": 42}]
    bad = subprocess.run(_cli() + ["query", "mysql://nope", "SELECT 1"], capture_output=True, text=True,
                         timeout=60, env=_env())
    assert bad.returncode != 0 and "2013" in bad.stderr
    usage = subprocess.run(_cli() + ["frobnicate"], capture_output=True, text=True, timeout=60, env=_env())
    assert usage.returncode == 2
