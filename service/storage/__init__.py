"""Where data lives: one Delta table per dataset (and, beside it, artifacts)."""
