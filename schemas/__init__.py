"""The contract between the service and the workers: specs, Arrow schema, API and job models.

Nothing in this package imports from `service`, `workers` or `cli`.
"""
