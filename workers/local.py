"""Train on a local file and evaluate a policy directory, without a service.

`fit_file` writes the same layout a downloaded policy has (`policy.onnx`, `policy.pt2`, `card.json`)
plus `metrics.jsonl`, one JSON line per progress report (step, seconds since the start, mean metrics).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from schemas.policies import POLICY_FILES

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
) -> dict[str, Any]:
    """Train `algorithm` on the transitions in `data_path` and export the policy into `out_dir`.

    Progress is reported (and logged) every `progress_every` steps, by default about 100 times a run
    and at least every 1000 steps. `threads` fixes torch's thread count; by default it is measured
    within this process's share of the cores (see `workers.runtime.threads`). When the rows would take
    more than `memory_budget` bytes on the device, they are written to memory-mapped columns in a
    scratch folder inside `out_dir` (removed afterwards) and training streams from there. Returns a
    summary: the files written, steps, final metrics, threads, seconds, steps per second and whether it
    streamed.
    """
    from schemas.algorithms import ALGORITHM_PARAMS

    # Arguments are checked before torch loads, so a typo fails at once.
    if algorithm not in ALGORITHM_PARAMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {sorted(ALGORITHM_PARAMS)}")
    if steps < 1:
        raise ValueError("steps must be at least 1")
    validated = ALGORITHM_PARAMS[algorithm].model_validate(dict(params or {}))

    import torch

    from workers import files
    from workers.algos.columns import READ_ROWS, MappedTransitions, write_columns
    from workers.algos.data import Normalisation, TransitionArrays, arrays_from_arrow
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
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with ExitStack() as scratch, (out / METRICS_FILE).open("w") as log, CoreShare() as cores:
        data: TransitionArrays | MappedTransitions
        if streamed:
            folder = Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix=".columns-", dir=out))) / "columns"
            data = MappedTransitions([write_columns(table.to_batches(READ_ROWS), table.num_rows, folder, spec)])
            normalisation = None  # streamed from the mapped columns by `fit`
        else:
            data = arrays_from_arrow(table)
            normalisation = Normalisation.from_arrays(data)
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
            normalisation=normalisation,
            on_progress=report,
            progress_every=progress_every or max(1, min(1000, steps // 100)),
            before_step=tuner.between_steps,
        )
    seconds = time.perf_counter() - started
    exported = export_policy(
        trained,
        out,
        card_extra={
            "data_file": str(Path(data_path).resolve()),
            "rows": len(data),
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
        "steps": result.step,
        "metrics": result.metrics,
        "threads": torch.get_num_threads(),
        "seconds": round(seconds, 3),
        "steps_per_second": round(result.step / seconds, 1) if seconds > 0 else None,
        "streamed": streamed,
    }


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

