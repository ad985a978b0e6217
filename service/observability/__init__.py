"""What operators watch: Prometheus metrics, the request id and the JSON log lines.

- `metrics`: `ServiceMetrics`, every metric of one app in a registry of its own, and its text exposition.
- `gauges`: the gauges read from the catalog at scrape time (queue depth, running jobs, workers).
- `job_outcomes`: job durations by outcome, observed from the catalog's own commits.
- `requests`: the middleware that gives each request its id, times it, counts it and logs it.
- `logs`: the JSON log formatter and the logging configuration of `replaybank serve`.
"""
