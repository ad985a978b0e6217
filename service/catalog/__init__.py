"""The catalog (SQLAlchemy): SQLite by default, PostgreSQL when a database URL is given."""

from service.catalog.catalog import Catalog, CatalogConflict, EpisodeState

__all__ = ["Catalog", "CatalogConflict", "EpisodeState"]
