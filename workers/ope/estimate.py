"""One entry point for off-policy evaluation: `evaluate_offline` on arrays, `ope_file` on a local file.

The interval. The bootstrap resamples episodes with replacement and recomputes the mean of the per-episode
values (Q(s0, pi(s0)) for FQE, the mean rollout return for the model), so it captures how much the
estimate depends on which initial states happened to be logged (and, for the model, on rollout noise).
It does not refit FQE or the dynamics model per resample, so the error of the fitted function itself
(too few steps, too little coverage of the policy's actions, a model that is wrong where the policy goes)
is not in it: read it as a lower bound on the uncertainty, most useful to compare policies on the same data.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from schemas.dataset import ContinuousActionSpec, DatasetSpec
from schemas.splits import Split, held_out
from workers.algos.data import TransitionArrays
from workers.algos.data import episode_returns
from workers.algos.dynamics import DynamicsModel
from workers.ope.episodes import bootstrap_interval, initial_rows
from workers.ope.fqe import FQESettings, ProgressCallback, fit_fqe
from workers.ope.model_based import DynamicsSettings, check_model, fit_model, rollout_values
from workers.ope.policies import as_dataset_policy

METHODS = ("fqe", "model")
DEFAULT_FQE_STEPS = 20_000


@dataclass(frozen=True)
class OPEResult:
    """An off-policy estimate of a policy's expected discounted return from the episodes' initial states."""

    method: str
    estimate: float
    low: float
    high: float
    confidence: float
    discount: float
    episodes: int
    """Complete episodes whose initial states the estimate averages over."""
    rows: int
    """Transitions the estimate used (the held-out ones, with a split)."""
    steps: int
    """FQE's gradient steps, or the model rollouts' horizon."""
    split: dict[str, Any] | None
    seed: int
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)
    """Method-specific: FQE's last loss; the model's horizon, rollouts per state, whether it was reused."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_offline(
    policy: Any,
    data: TransitionArrays,
    spec: DatasetSpec,
    method: str = "fqe",
    steps: int | None = None,
    seed: int = 0,
    discount: float = 0.99,
    split: Split | None = None,
    device: torch.device | str = "cpu",
    *,
    confidence: float = 0.95,
    resamples: int = 1000,
    fqe: FQESettings = FQESettings(),
    dynamics: DynamicsModel | bytes | None = None,
    dynamics_settings: DynamicsSettings = DynamicsSettings(),
    rollouts_per_state: int = 10,
    on_progress: ProgressCallback | None = None,
) -> OPEResult:
    """Estimate `policy`'s return on `data` (its held-out episodes, with a split) by FQE or a dynamics model.

    `policy`: a policy folder or file, a torch module or a batch callable (`workers.ope.policies`).
    `steps`: FQE's gradient steps (default 20,000), or the model rollouts' horizon (default the mean
    length of the complete episodes). `dynamics`: a trained model (or its bytes) to roll out in, as the
    service stores COMBO's per version; without one, a model is fitted to the evaluation data.
    Bad input (spaces that do not match, no complete episode, an unknown method) is a ValueError.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if not 0.0 < discount < 1.0:
        raise ValueError(f"discount must lie strictly between 0 and 1, not {discount}")
    if steps is not None and steps < 1:
        raise ValueError("steps must be at least 1")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, not {confidence}")
    _check_data(data, spec)
    if method == "model" and not isinstance(spec.action, ContinuousActionSpec):
        raise ValueError("action: a model-based estimate needs continuous actions; this dataset's are discrete")
    started = time.perf_counter()
    device = torch.device(device)
    if split is not None:
        rows = held_out(data.episode_ids, split)
        if not rows.any():
            raise ValueError(
                f"the split (validation_fraction={split.validation_fraction}, seed={split.seed}) "
                "holds out no episode of this data"
            )
        data = data.subset(rows)
    try:
        initial = initial_rows(data)
    except ValueError as error:
        where = "the split's held-out episodes have" if split is not None else "the data has"
        raise ValueError(f"{where} {error}") from None
    dataset_policy = as_dataset_policy(policy, spec)

    details: dict[str, Any] = {}
    if method == "fqe":
        steps = steps or DEFAULT_FQE_STEPS
        fitted = fit_fqe(
            dataset_policy,
            data,
            spec,
            initial,
            discount=discount,
            steps=steps,
            seed=seed,
            device=device,
            settings=fqe,
            on_progress=on_progress,
        )
        values = fitted.initial_values
        details["fqe_loss"] = fitted.loss
    else:
        if steps is None:
            _, lengths = episode_returns(data)
            steps = max(1, round(float(lengths.mean())))
        if dynamics is None:
            model, summary = fit_model(data, dynamics_settings, device, seed)
            details.update(summary)
        else:
            model = DynamicsModel.from_bytes(dynamics, device) if isinstance(dynamics, bytes) else dynamics
        check_model(model, spec)
        details.update(model_reused=dynamics is not None, rollouts_per_state=rollouts_per_state)
        values = rollout_values(
            dataset_policy,
            model,
            data,
            initial,
            horizon=steps,
            discount=discount,
            rollouts_per_state=rollouts_per_state,
            seed=seed,
            device=device,
            on_progress=on_progress,
        )
    low, high = bootstrap_interval(values, confidence, resamples, seed)
    return OPEResult(
        method=method,
        estimate=float(values.mean()),
        low=low,
        high=high,
        confidence=confidence,
        discount=discount,
        episodes=len(initial),
        rows=len(data),
        steps=steps,
        split=split.model_dump() if split is not None else None,
        seed=seed,
        seconds=round(time.perf_counter() - started, 3),
        details=details,
    )


def ope_file(
    policy_dir: str | Path,
    data_path: str | Path,
    method: str = "fqe",
    steps: int | None = None,
    seed: int = 0,
    discount: float = 0.99,
    validation_fraction: float | None = None,
    split_seed: int = 0,
    device: str = "cpu",
    env_id: str | None = None,
    threads: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """`evaluate_offline` of a policy folder on the transitions in a local file, as a JSON-able dict."""
    from workers import files
    from workers.algos.data import arrays_from_arrow

    split = None if validation_fraction is None else Split(validation_fraction=validation_fraction, seed=split_seed)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for, but torch sees no CUDA device here")
    if threads is not None:
        torch.set_num_threads(threads)
    raw = files.read_file(data_path)
    spec = files.infer_spec(raw, env_id=env_id)
    data = arrays_from_arrow(files.to_upload_table(raw, spec))
    result = evaluate_offline(
        Path(policy_dir), data, spec, method, steps, seed, discount, split, device, on_progress=on_progress
    )
    return {"policy": str(Path(policy_dir).resolve()), "data_file": str(Path(data_path).resolve()), **result.as_dict()}


def _check_data(data: TransitionArrays, spec: DatasetSpec) -> None:
    if len(data) == 0:
        raise ValueError("the data has no transitions")
    if data.observations.shape[1:] != (spec.observation.size,):
        raise ValueError(
            f"observation: the data's observations have {data.observations.shape[1:]} values a row; "
            f"the spec's shape {list(spec.observation.shape)} needs {spec.observation.size}"
        )
    continuous = isinstance(spec.action, ContinuousActionSpec)
    if continuous != (data.actions.ndim == 2 and np.issubdtype(data.actions.dtype, np.floating)):
        raise ValueError(
            f"action: the data's actions ({data.actions.dtype}, {data.actions.ndim}-d) do not fit the spec's"
        )
