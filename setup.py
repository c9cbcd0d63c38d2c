"""Builds noodlecore._native: the C core (csrc/core, no Python.h) and the
CPython binding layer (csrc/py), linked against the system libpq and SQLite.

Environment:
  NOODLE_CFLAGS   extra compiler flags (CI passes -Werror; the sanitizer
                  build passes -fsanitize=address,undefined ...)
  NOODLE_LDFLAGS  extra linker flags
"""

import glob
import os
import shlex
import shutil
import subprocess

from setuptools import Extension, setup


def _pg_config(flag):
    exe = shutil.which("pg_config")
    if exe:
        try:
            return subprocess.check_output([exe, flag], text=True).strip()
        except (OSError, subprocess.CalledProcessError):
            pass
    return None


def _pkg_config(args):
    exe = shutil.which("pkg-config")
    if exe:
        try:
            return shlex.split(subprocess.check_output([exe] + args + ["libpq"], text=True))
        except (OSError, subprocess.CalledProcessError):
            pass
    return []


include_dirs = []
library_dirs = []
inc = _pg_config("--includedir")
if inc:
    include_dirs.append(inc)
else:
    include_dirs += [f[2:] for f in _pkg_config(["--cflags-only-I"])]
lib = _pg_config("--libdir")
if lib:
    library_dirs.append(lib)
else:
    library_dirs += [f[2:] for f in _pkg_config(["--libs-only-L"])]

sources = sorted(glob.glob("csrc/core/*.c")) + sorted(glob.glob("csrc/py/*.c"))
extra_compile = ["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Wno-missing-field-initializers",
                 "-Wno-cast-function-type", "-fvisibility=hidden", "-O2"]
extra_compile += shlex.split(os.environ.get("NOODLE_CFLAGS", ""))
extra_link = ["-pthread"] + shlex.split(os.environ.get("NOODLE_LDFLAGS", ""))

setup(
    ext_modules=[
        Extension(
            "noodlecore._native",
            sources=sources,
            include_dirs=include_dirs,
            library_dirs=library_dirs,
            libraries=["pq", "sqlite3", "m"],
            extra_compile_args=extra_compile,
            extra_link_args=extra_link,
            depends=sorted(glob.glob("csrc/core/*.h") + glob.glob("csrc/py/*.h")),
        )
    ],
)
