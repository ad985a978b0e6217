"""A policy to evaluate, as a batch function on a dataset's flat rows, checked against the dataset's spaces.

A policy is a folder in the artifact layout (`policy.onnx`, `policy.pt2`, `card.json`; see
`workers.algos.export`), one of those files, a torch module, or any callable from raw float32
observations [N, *obs_shape] (numpy) to actions in the dataset's action space. Its spaces are checked
twice: against the card when there is one, and by calling it on a probe batch, so a policy trained
elsewhere (no card, or a card that lies) is held to the same contract.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from schemas.dataset import ContinuousActionSpec, DatasetSpec, DiscreteActionSpec
from workers.algos.export import CARD_FILE, ONNX_FILE, PROGRAM_FILE
from workers.rollouts.evaluate import PolicyFn, load_policy

CHUNK_ROWS = 65_536
"""Rows per policy call when acting on a whole dataset, so memory stays bounded."""


class DatasetPolicy:
    """A policy checked against a dataset spec, called on flat observation rows [N, obs_size].

    Returns flat actions: float32 [N, action_size] clipped into the bounds, or int64 [N].
    """

    def __init__(self, act: PolicyFn, spec: DatasetSpec) -> None:
        self.act = act
        self.spec = spec
        self._check_probe()

    def __call__(self, observations: Any) -> np.ndarray:
        flat = _as_numpy(observations).astype(np.float32, copy=False)
        rows = flat.shape[0]
        shaped = flat.reshape(rows, *self.spec.observation.shape)
        if rows == 0:
            action = self.spec.action
            if isinstance(action, ContinuousActionSpec):
                return np.zeros((0, action.size), np.float32)
            return np.zeros(0, np.int64)
        return np.concatenate([self._act(shaped[start : start + CHUNK_ROWS]) for start in range(0, rows, CHUNK_ROWS)])

    def _act(self, observations: np.ndarray) -> np.ndarray:
        return self._conform(_as_numpy(self.act(np.ascontiguousarray(observations))), observations.shape[0])

    def _conform(self, actions: np.ndarray, rows: int) -> np.ndarray:
        """Flat actions of the dataset's dtype, continuous ones clipped into the bounds."""
        action = self.spec.action
        if isinstance(action, ContinuousActionSpec):
            flat = actions.reshape(rows, action.size).astype(np.float32, copy=False)
            return np.clip(flat, np.asarray(action.low, np.float32), np.asarray(action.high, np.float32))
        indices = actions.reshape(rows).astype(np.int64, copy=False)
        outside = indices[(indices < 0) | (indices >= action.n)]
        if outside.size:
            raise ValueError(
                f"action: the policy returned action {int(outside[0])}; the dataset's are 0..{action.n - 1}"
            )
        return indices

    def _check_probe(self) -> None:
        """Call the policy on two zero observations; wrong input or output shapes are a ValueError."""
        shape = list(self.spec.observation.shape)
        probe = np.zeros((2, *shape), dtype=np.float32)
        try:
            actions = _as_numpy(self.act(probe))
        except Exception as error:  # onnxruntime, torch and user code each raise their own kinds
            raise ValueError(
                f"observation: the policy does not take the dataset's observations of shape {shape} "
                f"({type(error).__name__}: {error})"
            ) from error
        action = self.spec.action
        if isinstance(action, ContinuousActionSpec):
            expected, ok = [2, *action.shape], np.issubdtype(actions.dtype, np.floating)
        else:
            expected, ok = [2], np.issubdtype(actions.dtype, np.integer)
        if list(actions.shape) != expected or not ok:
            raise ValueError(
                f"action: the policy returns {actions.dtype} actions of shape {list(actions.shape)[1:]} for a batch; "
                f"the dataset's actions are {_describe_action(self.spec)}"
            )
        self._conform(actions, 2)


def as_dataset_policy(policy: Any, spec: DatasetSpec, prefer: str = "onnx") -> DatasetPolicy:
    """A policy folder, file, torch module or callable as a `DatasetPolicy` (see the module docstring)."""
    if isinstance(policy, DatasetPolicy):
        if policy.spec != spec:
            return DatasetPolicy(policy.act, spec)
        return policy
    if isinstance(policy, (str, Path)):
        return load_artifact(policy, spec, prefer)
    return DatasetPolicy(load_policy(policy), spec)


def load_artifact(path: str | Path, spec: DatasetSpec, prefer: str = "onnx") -> DatasetPolicy:
    """A policy folder (the artifact layout) or a `.onnx` / `.pt2` file, checked against `spec`.

    In a folder both files run the same network; `prefer` picks ONNX (onnxruntime) or the exported
    program (torch) when both are there.
    """
    if prefer not in ("onnx", "torch"):
        raise ValueError(f"prefer must be 'onnx' or 'torch', not {prefer!r}")
    path = Path(path)
    if path.is_dir():
        card_path = path / CARD_FILE
        if card_path.is_file():
            check_card(json.loads(card_path.read_text()), spec)
        candidates = [path / ONNX_FILE, path / PROGRAM_FILE]
        if prefer == "torch":
            candidates.reverse()
        found = [candidate for candidate in candidates if candidate.is_file()]
        if not found:
            raise FileNotFoundError(f"no {ONNX_FILE} or {PROGRAM_FILE} in {path}")
        path = found[0]
    elif not path.is_file():
        raise FileNotFoundError(f"no policy at {path}")
    if path.suffix == ".pt2":
        import torch

        return DatasetPolicy(load_policy(torch.export.load(str(path)).module()), spec)
    if path.suffix == ".onnx":
        return DatasetPolicy(load_policy(path), spec)
    raise ValueError(f"a policy file is {ONNX_FILE} or {PROGRAM_FILE}, not {path.name}")


def check_card(card: dict[str, Any], spec: DatasetSpec) -> None:
    """The card's observation and action spaces must match the dataset's (shapes, kind, count)."""
    observation = card.get("observation") or {}
    if "shape" in observation and list(observation["shape"]) != list(spec.observation.shape):
        raise ValueError(
            f"observation: the policy takes observations of shape {list(observation['shape'])}; "
            f"the dataset's are {list(spec.observation.shape)}"
        )
    action = card.get("action") or {}
    if not action:
        return
    if action.get("kind") == "discrete":
        described = f"discrete with n={action.get('n')}"
        matches = isinstance(spec.action, DiscreteActionSpec) and action.get("n") == spec.action.n
    else:
        described = f"continuous of shape {list(action.get('shape') or [])}"
        matches = isinstance(spec.action, ContinuousActionSpec) and list(action.get("shape") or []) == list(
            spec.action.shape
        )
    if not matches:
        raise ValueError(f"action: the policy's actions are {described}; the dataset's are {_describe_action(spec)}")


def _describe_action(spec: DatasetSpec) -> str:
    if isinstance(spec.action, DiscreteActionSpec):
        return f"discrete with n={spec.action.n} (int64 of shape [])"
    return f"continuous of shape {list(spec.action.shape)} (float32)"


def _as_numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, maybe on an accelerator
        return values.detach().cpu().numpy()
    return np.asarray(values)
