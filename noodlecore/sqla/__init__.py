"""SQLAlchemy 2.x dialects on noodlecore.dbapi (registered as entry points,
so no import is needed):

    engine = create_engine("postgresql+noodlecore://app@db:5432/app")
    engine = create_engine("sqlite+noodlecore:///app.db")

The native pool does the pooling: the engine's pool is a pass-through
(a ``NullPool``), so a checkout borrows from the native pool and a check-in
gives the connection back to it, with no second queue; ``engine.dispose()``
drains the native pools the engine used (idle server connections closed
now, checked-out ones when they come back).  Pool options come
from the URL's query (``?max_connections=5&timeout=2``) or from
``connect_args``; everything else in the query goes to the database's DSN.
"""

from .postgresql import PGDialect_noodlecore
from .sqlite import SQLiteDialect_noodlecore

__all__ = ["PGDialect_noodlecore", "SQLiteDialect_noodlecore"]
