"""Off-policy evaluation: a policy's expected discounted return estimated from logged transitions alone.

`estimate.evaluate_offline` is the entry point (and `estimate.ope_file` for a local file); `fqe.py` is
Fitted Q Evaluation, `model_based.py` rollouts in a learned dynamics ensemble, `episodes.py` the initial
states and the bootstrap interval over episodes both share, and `policies.py` turns a policy artifact
(ONNX or exported program) into a batch function checked against the dataset's spaces.
"""
