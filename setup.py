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

from concurrent.futures import ThreadPoolExecutor

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


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



class ParallelBuildExt(build_ext):
    """Compiles the extension's sources on every core (setuptools compiles one
    extension's sources one after another; ours has some fifty files)."""

    def build_extension(self, ext):
        jobs = os.cpu_count() or 1
        compile_some = self.compiler.compile

        def compile_all(sources, *args, **kwargs):
            if jobs < 2 or len(sources) < 2:
                return compile_some(sources, *args, **kwargs)
            with ThreadPoolExecutor(jobs) as ex:
                objects = ex.map(lambda src: compile_some([src], *args, **kwargs), sources)
                return [obj for part in objects for obj in part]

        self.compiler.compile = compile_all
        try:
            super().build_extension(ext)
        finally:
            self.compiler.compile = compile_some


setup(
    cmdclass={"build_ext": ParallelBuildExt},
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
