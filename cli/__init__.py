"""The `replaybank` console script: the one composition root, and the only package that imports click.

Each command imports `service` or `workers` inside itself, so starting the script stays fast.

main.py      the command tree
options.py   shared options (--service, --token, --version, --param) and argument parsing
errors.py    `reports_errors`: every failure a user can fix becomes one line and exit status 1
output.py    tables, progress bars, short summaries
service.py   serve; token create / list / revoke (through the API)
datasets.py  datasets, upload, versions, stats, tag
pulls.py     pull, query
jobs.py      train, collect, jobs, watch
policies.py  policies, download
worker.py    worker
learn.py     fit, evaluate (without a service)
health.py    `wait_until_healthy`, for programs that start `replaybank serve` (tests, benchmarks, the demo)
"""
