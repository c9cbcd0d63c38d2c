"""SQLAlchemy's dialect compliance suite, as shipped in the installed SQLAlchemy."""

from sqlalchemy.testing.suite import *  # noqa: F401,F403
from sqlalchemy.testing.suite import ServerSideCursorsTest as _ServerSideCursorsTest


class ServerSideCursorsTest(_ServerSideCursorsTest):
    # The suite recognises a server-side cursor by driver name and answers
    # False for every driver it does not list (its own TODO says this keeps
    # third-party dialects from these tests).  Ours carries the attribute
    # pg8000's and asyncpg's have; every other driver keeps the suite's answer.
    def _is_server_side(self, cursor):
        if self.engine.dialect.driver == "noodlecore":
            return getattr(cursor, "server_side", False)
        return super()._is_server_side(cursor)
