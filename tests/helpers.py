"""Small helpers shared by test files."""

import os
import pathlib


def subprocess_env(**extra):
    """Environment for a child Python that must import the same noodlecore as
    this process (the installed one under tests/run.sh, the source tree in
    development), whatever its working directory."""
    import noodlecore
    env = dict(os.environ)
    pkg_parent = str(pathlib.Path(noodlecore.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = pkg_parent + os.pathsep + env.get("PYTHONPATH", "")
    env.update({k: str(v) for k, v in extra.items()})
    return env
