"""Workers: everything on the side of the wire away from the service. Never imports `service`.

client/    `ReplaybankClient`, the HTTP client users, the command line and workers share; client/pull/
           is its pull path (file cache, bulk downloads, Parquet decoding)
files/     transition file formats (Parquet, Arrow, NPZ, D4RL HDF5, Minari), one module each, chosen by name
rollouts/  running a policy in a Gymnasium environment: evaluation, collection, scripted behaviour
runtime/   the worker process: the claim loop, a held job's session, what happens on failure, the runners
algos/     the learning library (IQL, CQL, COMBO, BC; replay, training, export)
local.py   `fit` on a local file and `evaluate` a policy folder, without a service
"""
