"""What our dialects (postgresql+noodlecore, sqlite+noodlecore) support, for
SQLAlchemy's compliance suite: SQLAlchemy's own DefaultRequirements (vendored
beside this file), with every difference stated and its reason given."""

from sqlalchemy.testing import exclusions

from sqla_default_requirements import DefaultRequirements


def _off(reason):
    return exclusions.skip_if(lambda config: True, reason)


class NoodleRequirements(DefaultRequirements):
    @property
    def infinity_floats(self):
        # SQLAlchemy lists the drivers known to round-trip inf/-inf/nan;
        # noodlecore's adapters do (float8's text form both ways), as psycopg's.
        return exclusions.open()

    @property
    def regexp_match(self):
        # SQLite has no REGEXP function of its own: pysqlite registers a Python
        # one (sqlite3's create_function).  noodlecore.dbapi has no way to run
        # Python inside a native statement, so on SQLite the operator is not
        # supported; PostgreSQL's ~ operator works.
        return super().regexp_match + exclusions.skip_if(
            "sqlite+noodlecore", "SQLite has no REGEXP; noodlecore registers no Python functions")
