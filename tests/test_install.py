"""The test command runs the suite against the installed package, not the
source tree (NOODLE_EXPECT_INSTALLED=1 is set by tests/run.sh)."""

import os
import pathlib

import pytest

import noodlecore
from noodlecore import _native


@pytest.mark.skipif(not os.environ.get("NOODLE_EXPECT_INSTALLED"), reason="only under tests/run.sh")
def test_imported_from_site_packages():
    repo = pathlib.Path(__file__).resolve().parent.parent
    assert repo not in pathlib.Path(noodlecore.__file__).resolve().parents


def test_native_module_reports_library_versions():
    assert _native.libpq_version >= 150000
    assert _native.sqlite_version.startswith("3.")
