"""What our dialects (postgresql+noodlecore, sqlite+noodlecore) support, for
SQLAlchemy's compliance suite: SQLAlchemy's own DefaultRequirements (vendored
beside this file), with every difference stated and its reason given."""

from sqlalchemy.testing import exclusions

from sqla_default_requirements import DefaultRequirements


def _off(reason):
    return exclusions.skip_if(lambda config: True, reason)


class NoodleRequirements(DefaultRequirements):
    pass
