"""Small helpers shared by test files."""

import os
import pathlib
import time


def wait_for(cond, timeout=5.0, interval=0.01, what="condition"):
    """Poll cond() until it returns something true (returned) or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(interval)


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
