"""The job side. The catalog holds each job's state; the queue only leases ids to workers.

- `submission`: what users do with jobs: submit, list, show, metric history, cancel.
- `protocol`: what workers do: claim, heartbeat, complete, fail, release, checkpoints, COMBO dynamics
  models, and the sweeper that requeues jobs whose worker fell silent.
- `roster`: the workers list: who claimed or heartbeated recently, on what, holding which job.
- `records`: the job rows as the API shows them, and the lookups over one session both of them share.

The policy registry a finished train job feeds is `service.policies`.
"""
