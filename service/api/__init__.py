"""HTTP routers, one per resource, and the typed dependencies they share."""
