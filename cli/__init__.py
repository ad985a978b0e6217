"""The `replaybank` console script: the one composition root, and the only package that imports click.

Each command imports `service` or `workers` inside itself, so starting the script stays fast.

main.py      the command tree
options.py   shared options (--service, --token-file/--token, --version, --param) and argument parsing
errors.py    one voice for errors: `reports_errors` and `validation_message` make every failure a user can
             fix one line (what, which field, what would be accepted) and exit status 1
output.py    tables, progress bars, short summaries
service.py   serve; token create / list / revoke (through the API)
datasets.py  datasets (list, show, create, edit, delete), upload, versions, stats, tags, tag
pulls.py     pull, query
jobs.py      train, collect, jobs, watch
policies.py  policies, download
worker.py    worker
operators.py workers (the workers the service saw recently)
learn.py     fit, evaluate (without a service)
health.py    `wait_until_healthy`, for programs that start `replaybank serve` (tests, benchmarks, the demo)
"""
