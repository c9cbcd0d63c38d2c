"""noodlecore: a Python database library whose core is C (see noodlecore.database).

``__version__`` is the one place the version is written: the packaging reads
it (pyproject.toml, ``[tool.setuptools.dynamic]``), so ``pip show noodlecore``,
``importlib.metadata.version("noodlecore")`` and the benchmarks' reports all
say the same.
"""

__version__ = "0.1.0"
