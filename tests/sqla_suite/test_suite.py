"""SQLAlchemy's dialect compliance suite, as shipped in the installed SQLAlchemy."""

from sqlalchemy.testing.suite import *  # noqa: F401,F403
