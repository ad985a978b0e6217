"""The worker runtime: claim a job over HTTP, run it, report it, claim the next.

loop.py      `run_worker`: the claim loop, signals, `WorkerOptions`, and `run_job` (runner, then complete)
session.py   `JobSession`: the held lease, heartbeats with progress and metrics, cancelled / lost / stopping
retry.py     what becomes of a job whose runner raised: failed, dropped to lapse, or given back
threads.py   how many torch threads a training process takes: `CoreShare` of the cores, `ThreadTuner` within it
train.py     the train runner (checkpoints, resume, fine-tuning, export, evaluation, upload)
collect.py   the collect runner (chunked idempotent appends with the job's lease)
evaluate.py  the evaluate runner (returns in the dataset's environment)
ope.py       the offline evaluate runner ("fqe"/"model": an estimate from logged episodes, no environment)
"""
