"""Train on a local file and evaluate a policy directory, without a service.

`fit_file` writes the same layout a downloaded policy has (`policy.onnx`, `policy.pt2`, `card.json`)
plus `metrics.jsonl`, one JSON line per progress report (step, seconds since the start, mean metrics,
and with a validation fraction the `validation/...` metrics on the held-out episodes).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.policies import POLICY_FILES

if TYPE_CHECKING:
    from schemas.splits import Split
    from workers.algos.data import TransitionArrays

METRICS_FILE = "metrics.jsonl"

ProgressCallback = Callable[[int, dict[str, float]], None]


def fit_file(
    algorithm: str,
    data_path: str | Path,
    steps: int,
    seed: int,
    device: str,
    out_dir: str | Path,
    params: Mapping[str, Any] | None = None,
    on_progress: ProgressCallback | None = None,
    env_id: str | None = None,
    threads: int | None = None,
    progress_every: int | None = None,
    validation_fraction: float | None = None,
    split_seed: int = 0,
) -> dict[str, Any]:
    """Train `algorithm` on the transitions in `data_path` and export the policy into `out_dir`.

    Progress is reported (and logged) every `progress_every` steps, by default about 100 times a run
    and at least every 1000 steps. `threads` fixes torch's thread count; by default it is measured
    within this process's share of the cores (see `workers.runtime.threads`). With `validation_fraction`,
    the episodes a split (`split_seed`) holds out are never trained on (nor in the normalisation) and are
    measured at every report. Returns a summary: the files written, steps, final metrics, threads, seconds
    and steps per second, and the split with its held-out episode and row counts.
    """
    from schemas.algorithms import ALGORITHM_PARAMS
    from schemas.splits import Split

    # Arguments are checked before torch loads, so a typo fails at once.
    if algorithm not in ALGORITHM_PARAMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {sorted(ALGORITHM_PARAMS)}")
    if steps < 1:
        raise ValueError("steps must be at least 1")
    validated = ALGORITHM_PARAMS[algorithm].model_validate(dict(params or {}))
    split = None if validation_fraction is None else Split(validation_fraction=validation_fraction, seed=split_seed)

    import torch

    from workers import files
    from workers.algos.data import Normalisation, arrays_from_arrow, split_arrays, split_summary
    from workers.algos.export import export_policy
    from workers.algos.training import fit
    from workers.runtime.threads import CoreShare, ThreadTuner

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for, but torch sees no CUDA device here")
    raw = files.read_file(data_path)
    spec = files.infer_spec(raw, env_id=env_id)
    data = arrays_from_arrow(files.to_upload_table(raw, spec))
    validation = None
    recorded_split: dict[str, Any] | None = None
    if split is not None:
        data, validation, _ = split_arrays(data, split)
        _check_split_sides(split, validation, len(data))
        recorded_split = split_summary(split, validation)
    normalisation = Normalisation.from_arrays(data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with (out / METRICS_FILE).open("w") as log, CoreShare() as cores:
        tuner = ThreadTuner(cores.threads, torch.set_num_threads, fixed=threads)

        def report(step: int, metrics: dict[str, float]) -> None:
            line = {"step": step, "seconds": round(time.perf_counter() - started, 3), **metrics}
            log.write(json.dumps(line) + "\n")
            log.flush()
            if on_progress is not None:
                on_progress(step, metrics)

        trained, result = fit(
            algorithm,
            data,
            spec,
            steps,
            seed,
            device=device,
            params=validated,
            normalisation=normalisation,
            on_progress=report,
            progress_every=progress_every or max(1, min(1000, steps // 100)),
            before_step=tuner.between_steps,
            validation=validation,
        )
    seconds = time.perf_counter() - started
    exported = export_policy(
        trained,
        out,
        card_extra={
            "data_file": str(Path(data_path).resolve()),
            "rows": len(data),
            "split": recorded_split,
            "metrics": result.metrics,
            "training_seconds": round(seconds, 3),
        },
    )
    return {
        "out_dir": str(out),
        "onnx": str(exported.onnx),
        "program": str(exported.program),
        "card": str(exported.card),
        "metrics_log": str(out / METRICS_FILE),
        "algorithm": algorithm,
        "rows": len(data),
        "split": recorded_split,
        "steps": result.step,
        "metrics": result.metrics,
        "threads": torch.get_num_threads(),
        "seconds": round(seconds, 3),
        "steps_per_second": round(result.step / seconds, 1) if seconds > 0 else None,
    }


def _check_split_sides(split: Split, validation: TransitionArrays, training_rows: int) -> None:
    """A split that holds out nothing, or leaves nothing to train on, is refused (as the service does)."""
    where = f"the split (validation_fraction={split.validation_fraction}, seed={split.seed})"
    if split.validation_fraction > 0 and len(validation) == 0:
        raise ValueError(f"{where} holds out no episode of this data; choose another split seed or a larger fraction")
    if training_rows == 0:
        raise ValueError(f"{where} holds out every episode of this data; choose another split seed or a smaller fraction")


def evaluate_dir(
    policy_dir: str | Path,
    env_id: str | None = None,
    episodes: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate the ONNX policy in a policy directory; the environment defaults to the card's env_id.

    A policy made for other spaces than the environment's is refused before the first step, naming both.
    """
    from workers.rollouts.evaluate import evaluate

    directory = Path(policy_dir)
    card_path = directory / POLICY_FILES["card"]
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    env_id = env_id or card.get("env_id")
    if not env_id:
        raise ValueError(f"{directory} has no card naming an environment; give one with --env")
    return evaluate(directory, env_id, episodes=episodes, seed=seed)

