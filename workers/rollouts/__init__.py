"""Rollouts: a policy run step by step in a Gymnasium environment, whatever it is run for.

Named for that act rather than for the environments (they come from Gymnasium); nothing here talks
to the service, so the worker runtime, `replaybank evaluate`, tests and benchmarks share it.

evaluate.py   `evaluate`: seeded episodes and their returns; `load_policy`, `make_env`, reference returns
collect.py    `collect`: exploration rollouts in uploadable, reproducible chunks (a collect job's data)
behaviour.py  scripted controllers and the datasets they generate (tests, benchmarks, the demo)
"""
