"""The training loop: sample on the device, update, and talk to the outside world every so often.

The only host synchronisation is in the progress report (every `progress_every` steps), where the
window's mean metrics are read back at once. A checkpoint holds the algorithm's state, the sampler's
generator and torch's global RNG, so training resumed from one repeats the uninterrupted run exactly
(bit for bit on CPU). Given held-out transitions, each report also carries the algorithm's
`validation_metrics` on a fixed sample of them, as `validation/<name>`, measured with torch's RNG forked
so that a run with validation trains exactly as one without.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from schemas.algorithms import ALGORITHM_PARAMS
from schemas.dataset import ActionSpec, DatasetSpec
from workers.algos import ALGORITHMS
from workers.algos.base import OfflineAlgorithm
from workers.algos.columns import MappedTransitions, streamed_normalisation
from workers.algos.data import Normalisation, TransitionArrays
from workers.algos.replay import Batch, Replay, SamplingMismatch, normalise_arrays, training_replay
from workers.algos.streaming import close_replay, streaming_replay

CHECKPOINT_FORMAT = 1
PRECISIONS = ("float32", "bfloat16")
"""`train`'s `precision`: float32 throughout, or bfloat16 mixed precision (autocast; see `train`)."""

VALIDATION_ROWS = 2048
"""Held-out rows measured at every report at most: a fixed sample, so the curve moves with the networks only."""
VALIDATION_PREFIX = "validation/"

ProgressCallback = Callable[[int, dict[str, float]], None]
"""Called with (steps done, mean of each metric since the last report)."""
CheckpointCallback = Callable[[dict[str, Any]], None]
"""Called with a checkpoint (see `checkpoint`), to store wherever the caller keeps them."""


@dataclass(frozen=True)
class TrainingResult:
    step: int
    """Updates done in total (counting any before a resume)."""
    stopped: bool
    """`should_stop` ended the run before `steps`."""
    metrics: dict[str, float]
    """Means over the last progress window."""


def native_bfloat16(device: torch.device) -> bool:
    """Whether bfloat16 matrix products run natively on `device` (always on CUDA; on CPUs with AVX-512 BF16 or AMX)."""
    return device.type != "cpu" or bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def make_algorithm(
    name: str,
    params: Mapping[str, Any] | BaseModel | None,
    spec: DatasetSpec,
    normalisation: Normalisation,
    device: torch.device | str,
    seed: int,
    total_steps: int,
) -> OfflineAlgorithm:
    """An algorithm by its name, its params validated (unknown or out-of-range ones raise)."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {sorted(ALGORITHMS)}")
    model = ALGORITHM_PARAMS[name]
    validated = params if isinstance(params, model) else model.model_validate(dict(params or {}))
    return ALGORITHMS[name](validated, spec, normalisation, torch.device(device), seed, total_steps=total_steps)


def checkpoint(algorithm: OfflineAlgorithm, replay: Replay) -> dict[str, Any]:
    """Everything needed to continue the run exactly: save it with `torch.save`."""
    state: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "algorithm": algorithm.state_dict(),
        "replay": replay.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    if algorithm.device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(algorithm.device)
    return state


def restore(algorithm: OfflineAlgorithm, replay: Replay, state: Mapping[str, Any]) -> None:
    """Put the algorithm, the sampler and torch's RNG back where `checkpoint` found them (a sampler of the
    other kind, resident for streamed or back, starts afresh with a warning)."""
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"unsupported checkpoint format {state.get('format')!r}; expected {CHECKPOINT_FORMAT}")
    algorithm.load_state_dict(state["algorithm"])
    try:
        replay.load_state_dict(state["replay"])
    except SamplingMismatch as mismatch:
        # A job re-claimed by a worker with another memory budget: the networks, optimisers and step
        # resume; only which batches come next differs from the run that wrote the checkpoint.
        warnings.warn(f"{mismatch}: sampling starts afresh", RuntimeWarning, stacklevel=2)
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and algorithm.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], algorithm.device)


def validation_batch(
    data: TransitionArrays | MappedTransitions,
    held_out: np.ndarray,
    normalisation: Normalisation,
    action_spec: ActionSpec,
    device: torch.device,
    seed: int,
    rows: int = VALIDATION_ROWS,
) -> Batch | None:
    """At most `rows` of the rows of `data` that the mask `held_out` marks (a sample fixed by `seed`),
    normalised on `device`; None when it marks none. Mapped columns give only the sampled rows."""
    index = np.flatnonzero(held_out)
    if len(index) == 0:
        return None
    if len(index) > rows:
        index = np.sort(np.random.default_rng(seed).choice(index, rows, replace=False))
    sample = data.gather(index) if isinstance(data, MappedTransitions) else data.subset(index)
    return normalise_arrays(sample, normalisation, action_spec, device)


def validation_measures(algorithm: OfflineAlgorithm, batch: Batch) -> dict[str, torch.Tensor]:
    """`algorithm.validation_metrics` on `batch`, named `validation/<name>`, leaving torch's RNG as it was."""
    devices = [algorithm.device] if algorithm.device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        measured = algorithm.validation_metrics(batch)
    return {VALIDATION_PREFIX + name: value for name, value in measured.items()}


def train(
    algorithm: OfflineAlgorithm,
    replay: Replay,
    steps: int,
    batch_size: int,
    *,
    on_progress: ProgressCallback | None = None,
    progress_every: int = 1000,
    should_stop: Callable[[], bool] | None = None,
    before_step: Callable[[], None] | None = None,
    on_checkpoint: CheckpointCallback | None = None,
    checkpoint_every: int | None = None,
    precision: str = "float32",
    validation: Batch | None = None,
) -> TrainingResult:
    """Update until `algorithm.step` reaches `steps` (resume by `restore` first).

    `should_stop` is asked before every step (keep it cheap: a flag set by a signal handler or by
    `on_progress`); when it says stop, a last checkpoint goes to `on_checkpoint` and the run returns.
    `before_step` is called before every update (a thread tuner times the steps with it).
    `precision="bfloat16"` runs each update under bfloat16 autocast: matrix products in bfloat16
    (AMX on recent Xeons, tensor cores on GPUs), parameters, optimiser state and losses of mixed
    inputs in float32. Opt-in: faster, but Q values carry about three significant digits.
    With `validation` (held-out rows, e.g. from `validation_batch`), every report adds the algorithm's
    validation metrics on them (`validation_measures`) to the window's means.
    """
    if steps < 0 or batch_size < 1 or progress_every < 1:
        raise ValueError("steps must be >= 0, batch_size and progress_every >= 1")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    mixed_precision = precision == "bfloat16"
    if mixed_precision and not native_bfloat16(algorithm.device):
        warnings.warn(
            "precision='bfloat16' on a CPU without bfloat16 matrix instructions (AVX-512 BF16 or AMX): they are "
            "emulated, which measured about 50x slower than float32 on an AVX2 machine; prefer float32 here",
            RuntimeWarning,
            stacklevel=2,
        )
    sums: dict[str, torch.Tensor] = {}
    window = 0
    last: dict[str, float] = {}

    def report() -> None:
        nonlocal sums, window, last
        if window:
            means = {name: total / window for name, total in sums.items()}
            if validation is not None:
                means |= validation_measures(algorithm, validation)
            names = list(means)
            values = torch.stack([means[name].to(torch.float32) for name in names]).tolist()
            last = dict(zip(names, values))
            if on_progress is not None:
                on_progress(algorithm.step, last)
        sums, window = {}, 0

    while algorithm.step < steps:
        if should_stop is not None and should_stop():
            report()
            if on_checkpoint is not None:
                on_checkpoint(checkpoint(algorithm, replay))
            return TrainingResult(algorithm.step, True, last)
        if before_step is not None:
            before_step()
        batch = replay.sample(batch_size)
        # No weight-cast cache: a network stepped by its optimiser mid-update must not be read stale.
        with torch.autocast(algorithm.device.type, torch.bfloat16, enabled=mixed_precision, cache_enabled=False):
            metrics = algorithm.update(batch)
        algorithm.step += 1
        window += 1
        for name, value in metrics.items():
            value = value.to(torch.float32)
            sums[name] = sums[name] + value if name in sums else value.clone()
        if algorithm.step % progress_every == 0 or algorithm.step == steps:
            report()
        if on_checkpoint is not None and checkpoint_every and algorithm.step % checkpoint_every == 0:
            on_checkpoint(checkpoint(algorithm, replay))
    report()
    return TrainingResult(algorithm.step, False, last)


def fit(
    algorithm_name: str,
    data: TransitionArrays | MappedTransitions,
    spec: DatasetSpec,
    steps: int,
    seed: int,
    device: torch.device | str = "cpu",
    params: Mapping[str, Any] | BaseModel | None = None,
    normalisation: Normalisation | None = None,
    resume_from: Mapping[str, Any] | None = None,
    held_out: np.ndarray | None = None,
    **loop: Any,
) -> tuple[OfflineAlgorithm, TrainingResult]:
    """Train `algorithm_name` on `data` from scratch (or from `resume_from`); `loop` goes to `train`.

    Normalisation comes from the data unless given (e.g. from the version's statistics). Mapped
    columns (a version larger than the memory budget) are streamed (see `streaming`). `held_out`, a
    boolean mask over the rows of `data` (see `schemas.splits.held_out`), marks rows that are never
    trained on nor in the normalisation; the reports measure them.
    """
    training_rows = None if held_out is None else ~held_out
    if isinstance(data, MappedTransitions):
        refuse_streaming(algorithm_name)
        normalisation = normalisation or streamed_normalisation(data, rows=training_rows)
        algorithm = make_algorithm(algorithm_name, params, spec, normalisation, device, seed, total_steps=steps)
        replay: Replay = streaming_replay(data, normalisation, spec.action, algorithm.device, seed, rows=training_rows)
        training = None
    else:
        training = data if training_rows is None else data.subset(training_rows)
        normalisation = normalisation or Normalisation.from_arrays(training)
        algorithm = make_algorithm(algorithm_name, params, spec, normalisation, device, seed, total_steps=steps)
        replay = training_replay(training, normalisation, spec.action, algorithm.device, seed)
    validation = None
    if held_out is not None:
        validation = validation_batch(data, held_out, normalisation, spec.action, algorithm.device, seed)
    try:
        if resume_from is not None:
            restore(algorithm, replay, resume_from)
        elif training is not None:
            algorithm.prepare(training)
        result = train(algorithm, replay, steps, algorithm.params.batch_size, validation=validation, **loop)
    finally:
        close_replay(replay)
    return algorithm, result


def refuse_streaming(algorithm_name: str) -> None:
    """Raise when the algorithm cannot train on a streamed version (it needs the whole version resident)."""
    algorithm = ALGORITHMS.get(algorithm_name)
    if algorithm is not None and not algorithm.streams:
        raise ValueError(
            f"{algorithm_name} cannot stream a version larger than the memory budget: {algorithm.resident_reason}; "
            "raise --memory-budget or choose another algorithm"
        )
