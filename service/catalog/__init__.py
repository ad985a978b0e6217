"""The catalog (SQLAlchemy): SQLite by default, PostgreSQL when a database URL is given."""

from service.catalog import workers as _workers  # noqa: F401  (its table joins Base.metadata before create_all)
from service.catalog.catalog import Catalog, CatalogConflict, EpisodeState

__all__ = ["Catalog", "CatalogConflict", "EpisodeState"]
