"""What our dialects (postgresql+noodlecore, sqlite+noodlecore) support, for
SQLAlchemy's compliance suite: SQLAlchemy's own DefaultRequirements (vendored
beside this file), with every difference stated and its reason given."""

from sqlalchemy.testing import exclusions

from sqla_default_requirements import DefaultRequirements


class NoodleRequirements(DefaultRequirements):
    @property
    def infinity_floats(self):
        # SQLAlchemy lists the drivers known to round-trip inf/-inf/nan;
        # noodlecore's adapters do (float8's text form both ways), as psycopg's.
        return exclusions.open()

    @property
    def dbapi_lastrowid(self):
        # SQLAlchemy names the drivers whose cursors have lastrowid;
        # noodlecore.dbapi's has it on SQLite (sqlite3_last_insert_rowid).
        # (On PostgreSQL, as for psycopg, there is none: only_on leaves it off.)
        return exclusions.only_on(["sqlite+noodlecore"])
