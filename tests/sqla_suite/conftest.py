"""SQLAlchemy's pytest plugin for its dialect compliance suite (README.dialects).

This directory is not collected by the main run (tests/conftest.py ignores it):
tests/test_sqla_suite.py runs it in a child pytest with a configuration file it
writes for each target (which URL, which requirements class), because
SQLAlchemy reads its [sqla_testing] and [db] sections from setup.cfg/test.cfg
in pytest's rootdir only.
"""

import os
import sys

import pytest

# The requirements modules beside this file are named in the generated setup.cfg.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Must come before anything imports sqlalchemy.testing.
pytest.register_assert_rewrite("sqlalchemy.testing.assertions")

from sqlalchemy.testing.plugin.pytestplugin import *  # noqa: E402,F401,F403
