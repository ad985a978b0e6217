"""The training loop: sample on the device, update, and talk to the outside world every so often.

The only host synchronisation is in the progress report (every `progress_every` steps), where the
window's mean metrics are read back at once. A checkpoint holds the algorithm's state, the sampler's
generator and torch's global RNG, so training resumed from one repeats the uninterrupted run exactly
(bit for bit on CPU).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel

from schemas.algorithms import ALGORITHM_PARAMS
from schemas.dataset import DatasetSpec
from workers.algos import ALGORITHMS
from workers.algos.base import OfflineAlgorithm
from workers.algos.columns import MappedTransitions, streamed_normalisation
from workers.algos.data import Normalisation, TransitionArrays
from workers.algos.replay import Replay, SamplingMismatch, training_replay
from workers.algos.streaming import close_replay, streaming_replay

CHECKPOINT_FORMAT = 1
PRECISIONS = ("float32", "bfloat16")
"""`train`'s `precision`: float32 throughout, or bfloat16 mixed precision (autocast; see `train`)."""

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
) -> TrainingResult:
    """Update until `algorithm.step` reaches `steps` (resume by `restore` first).

    `should_stop` is asked before every step (keep it cheap: a flag set by a signal handler or by
    `on_progress`); when it says stop, a last checkpoint goes to `on_checkpoint` and the run returns.
    `before_step` is called before every update (a thread tuner times the steps with it).
    `precision="bfloat16"` runs each update under bfloat16 autocast: matrix products in bfloat16
    (AMX on recent Xeons, tensor cores on GPUs), parameters, optimiser state and losses of mixed
    inputs in float32. Opt-in: faster, but Q values carry about three significant digits.
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
            names = list(sums)
            values = (torch.stack([sums[name] for name in names]) / window).tolist()
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
    **loop: Any,
) -> tuple[OfflineAlgorithm, TrainingResult]:
    """Train `algorithm_name` on `data` from scratch (or from `resume_from`); `loop` goes to `train`.

    Normalisation comes from the data unless given (e.g. from the version's statistics). Mapped
    columns (a version larger than the memory budget) are streamed (see `streaming`).
    """
    if isinstance(data, MappedTransitions):
        refuse_streaming(algorithm_name)
        normalisation = normalisation or streamed_normalisation(data)
        algorithm = make_algorithm(algorithm_name, params, spec, normalisation, device, seed, total_steps=steps)
        replay = streaming_replay(data, normalisation, spec.action, algorithm.device, seed)
    else:
        normalisation = normalisation or Normalisation.from_arrays(data)
        algorithm = make_algorithm(algorithm_name, params, spec, normalisation, device, seed, total_steps=steps)
        replay = training_replay(data, normalisation, spec.action, algorithm.device, seed)
    try:
        if resume_from is not None:
            restore(algorithm, replay, resume_from)
        elif isinstance(data, TransitionArrays):
            algorithm.prepare(data)
        result = train(algorithm, replay, steps, algorithm.params.batch_size, **loop)
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
