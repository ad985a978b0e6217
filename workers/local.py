"""Train on a local file and evaluate a policy directory, without a service.

`fit_file` writes the same layout a downloaded policy has (`policy.onnx`, `policy.pt2`, `card.json`)
plus `metrics.jsonl`, one JSON line per progress report (step, seconds since the start, mean metrics,
and with a validation fraction the `validation/...` metrics on the held-out episodes).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.policies import POLICY_FILES

if TYPE_CHECKING:
    import numpy as np

    from schemas.splits import Split

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
    memory_budget: int | None = None,
    validation_fraction: float | None = None,
    split_seed: int = 0,
) -> dict[str, Any]:
    """Train `algorithm` on the transitions in `data_path` and export the policy into `out_dir`.

    Progress is reported (and logged) every `progress_every` steps, by default about 100 times a run
    and at least every 1000 steps. `threads` fixes torch's thread count; by default it is measured
    within this process's share of the cores (see `workers.runtime.threads`). When the rows would take
    more than `memory_budget` bytes on the device, they are written to memory-mapped columns in a
    scratch folder inside `out_dir` (removed afterwards) and training streams from there. With
    `validation_fraction`, the episodes a split (`split_seed`) holds out are never trained on (nor in the
    normalisation) and are measured at every report, resident or streamed. Returns a summary: the files
    written, steps, final metrics, threads, seconds, steps per second, whether it streamed, and the split
    with its held-out episode and row counts.
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

    from schemas.splits import held_out
    from workers import files
    from workers.algos.columns import READ_ROWS, MappedTransitions, write_columns
    from workers.algos.data import TransitionArrays, arrays_from_arrow, split_summary
    from workers.algos.export import export_policy
    from workers.algos.streaming import should_stream
    from workers.algos.training import fit, refuse_streaming
    from workers.runtime.threads import CoreShare, ThreadTuner

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for, but torch sees no CUDA device here")
    raw = files.read_file(data_path)
    spec = files.infer_spec(raw, env_id=env_id)
    table = files.to_upload_table(raw, spec)
    del raw
    streamed = should_stream(table.num_rows, spec, memory_budget)
    if streamed:
        refuse_streaming(algorithm)
    held: np.ndarray | None = None
    recorded_split: dict[str, Any] | None = None
    if split is not None:
        episode_ids = table.column("episode_id").to_numpy()
        held = held_out(episode_ids, split)
        _check_split_sides(split, held)
        recorded_split = split_summary(split, episode_ids[held])
    training_rows = table.num_rows - (0 if held is None else int(held.sum()))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with ExitStack() as scratch, (out / METRICS_FILE).open("w") as log, CoreShare() as cores:
        data: TransitionArrays | MappedTransitions
        if streamed:
            folder = Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix=".columns-", dir=out))) / "columns"
            data = MappedTransitions([write_columns(table.to_batches(READ_ROWS), table.num_rows, folder, spec)])
        else:
            data = arrays_from_arrow(table)
        del table
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
            on_progress=report,
            progress_every=progress_every or max(1, min(1000, steps // 100)),
            before_step=tuner.between_steps,
            held_out=held,
        )
    seconds = time.perf_counter() - started
    exported = export_policy(
        trained,
        out,
        card_extra={
            "data_file": str(Path(data_path).resolve()),
            "rows": training_rows,
            "split": recorded_split,
            "streamed": streamed,
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
        "rows": training_rows,
        "split": recorded_split,
        "steps": result.step,
        "metrics": result.metrics,
        "threads": torch.get_num_threads(),
        "seconds": round(seconds, 3),
        "steps_per_second": round(result.step / seconds, 1) if seconds > 0 else None,
        "streamed": streamed,
    }


def _check_split_sides(split: Split, held: np.ndarray) -> None:
    """A split that holds out nothing, or leaves nothing to train on, is refused (as the service does);
    `held` marks the rows it holds out."""
    where = f"the split (validation_fraction={split.validation_fraction}, seed={split.seed})"
    if split.validation_fraction > 0 and not held.any():
        raise ValueError(f"{where} holds out no episode of this data; choose another split seed or a larger fraction")
    if held.all():
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

