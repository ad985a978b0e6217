"""Training on a version larger than the memory budget: batches streamed from memory-mapped columns.

`StreamingReplay` samples as `ReplayBuffer` does (uniformly with replacement, over every row of the
version or the rows a mask allows), but the rows stay in the mapped column files (`columns`): a
background thread draws each batch's row indices, gathers those rows, normalises them and hands them,
pinned when the device is a GPU, to the training loop through a bounded queue. Batch `k`'s indices come
from a generator seeded by (seed, k) alone, so what the thread prepares ahead changes nothing, the
sampling state is the count of batches handed out, and a resumed run draws what the uninterrupted one
would have. `should_stream` says when a version goes this way: when its device tensors, estimated from
the row count before anything is read, would exceed the budget.
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from schemas.dataset import ActionSpec, ContinuousActionSpec, DatasetSpec
from workers.algos.columns import MappedTransitions
from workers.algos.data import Normalisation
from workers.algos.replay import Batch, MixedReplay, SamplingMismatch, normalise_arrays

PREFETCH_BATCHES = 8
"""Batches the background thread prepares ahead of the training loop."""


def device_row_bytes(spec: DatasetSpec) -> int:
    """Bytes one row takes on the training device in a `ReplayBuffer` (float32 observations twice, the
    action, reward and terminal)."""
    action = 4 * spec.action.size if isinstance(spec.action, ContinuousActionSpec) else 8
    return 8 * spec.observation.size + action + 8


def should_stream(rows: int, spec: DatasetSpec, memory_budget: int | None) -> bool:
    """Whether `rows` rows of this dataset exceed `memory_budget` bytes on the device (None: no budget)."""
    return memory_budget is not None and rows * device_row_bytes(spec) > memory_budget


class StreamingReplay:
    """Uniform batches gathered from `MappedTransitions` by a background thread (see the module docstring).

    `rows`, a boolean mask over the version, limits sampling to the rows it marks (a training split, or
    the online rows of a mixed replay). Call `close` (or use it as a context manager) to stop the thread.
    """

    def __init__(
        self,
        data: MappedTransitions,
        normalisation: Normalisation,
        action_spec: ActionSpec,
        device: torch.device,
        seed: int,
        rows: np.ndarray | None = None,
        prefetch: int = PREFETCH_BATCHES,
    ) -> None:
        if rows is not None and len(rows) != len(data):
            raise ValueError(f"the row mask has {len(rows)} entries for a version of {len(data)} rows")
        self.eligible = None if rows is None else np.flatnonzero(rows)
        self.size = len(data) if self.eligible is None else len(self.eligible)
        if self.size == 0:
            raise ValueError("the dataset has no transitions to train on")
        self.data, self.normalisation, self.action_spec = data, normalisation, action_spec
        self.device, self.seed, self.prefetch = device, seed, prefetch
        self.drawn = 0
        """Batches handed to the training loop so far: the whole sampling state."""
        self._pipeline: _Prefetcher | None = None
        self._stop_pipeline: weakref.finalize | None = None

    def __len__(self) -> int:
        return self.size

    def __enter__(self) -> StreamingReplay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def indices(self, batch: int, batch_size: int) -> np.ndarray:
        """The version row indices of batch number `batch`: uniform over the eligible rows, with replacement."""
        drawn = np.random.default_rng((self.seed, batch)).integers(0, self.size, batch_size)
        return drawn if self.eligible is None else self.eligible[drawn]

    def prepare(self, batch: int, batch_size: int) -> Batch:
        """Batch number `batch`, normalised, on the host (pinned for a GPU): what the thread makes."""
        rows = self.data.gather(self.indices(batch, batch_size))
        prepared = normalise_arrays(rows, self.normalisation, self.action_spec, torch.device("cpu"))
        if self.device.type == "cuda":
            prepared = Batch(*(tensor.pin_memory() for tensor in prepared))
        return prepared

    def sample(self, batch_size: int) -> Batch:
        """The next batch, on the training device."""
        if self._pipeline is None or self._pipeline.batch_size != batch_size:
            self._stop()
            self._pipeline = _Prefetcher(weakref.WeakMethod(self.prepare), self.drawn, batch_size, self.prefetch)
            # a replay dropped without `close` stops its thread when collected (the thread holds it weakly)
            self._stop_pipeline = weakref.finalize(self, self._pipeline.stop)
        batch = self._pipeline.next(self.drawn)
        self.drawn += 1
        if self.device.type == "cpu":
            return batch
        return Batch(*(tensor.to(self.device, non_blocking=True) for tensor in batch))

    def state_dict(self) -> dict[str, Any]:
        return {"streamed": {"seed": self.seed, "drawn": self.drawn, "rows": self.size}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        streamed = state.get("streamed")
        if streamed is None:
            raise SamplingMismatch("this checkpoint sampled a resident replay, and this run streams its batches")
        if streamed["rows"] != self.size:
            raise ValueError(f"this checkpoint sampled from {streamed['rows']} rows; this run samples from {self.size}")
        self._stop()
        self.seed, self.drawn = int(streamed["seed"]), int(streamed["drawn"])

    def close(self) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._stop_pipeline is not None:
            self._stop_pipeline()
        self._pipeline = self._stop_pipeline = None


def streaming_replay(
    data: MappedTransitions,
    normalisation: Normalisation,
    action_spec: ActionSpec,
    device: torch.device,
    seed: int,
    online_fraction: float | None = None,
    rows: np.ndarray | None = None,
) -> StreamingReplay | MixedReplay:
    """`training_replay` for a streamed version: every eligible row alike, or `online_fraction` of every
    batch from the rows policies collected and the rest from the others. `rows` masks the eligible rows."""
    if online_fraction is None:
        return StreamingReplay(data, normalisation, action_spec, device, seed, rows)
    online = data.column("collected")
    eligible = np.ones(len(data), np.bool_) if rows is None else rows
    return MixedReplay(
        StreamingReplay(data, normalisation, action_spec, device, seed, eligible & online),
        StreamingReplay(data, normalisation, action_spec, device, seed + 1, eligible & ~online),
        online_fraction,
    )


def close_replay(replay: object) -> None:
    """Stop the background threads of a streamed replay (mixed or not); nothing for a resident one."""
    for part in (replay, getattr(replay, "first", None), getattr(replay, "second", None)):
        if isinstance(part, StreamingReplay):
            part.close()


class _Prefetcher:
    """A thread preparing batches `first`, `first + 1`, ... into a bounded queue, in order."""

    def __init__(self, prepare: weakref.WeakMethod, first: int, batch_size: int, depth: int) -> None:
        self.batch_size = batch_size
        self._queue: queue.Queue[tuple[int, Batch | BaseException]] = queue.Queue(maxsize=depth)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(prepare, first), name="replaybank-prefetch", daemon=True)
        self._thread.start()

    def _run(self, weak_prepare: weakref.WeakMethod, batch: int) -> None:
        while not self._stopping.is_set():
            prepare: Callable[[int, int], Batch] | None = weak_prepare()
            if prepare is None:
                return
            try:
                item: Batch | BaseException = prepare(batch, self.batch_size)
            except BaseException as error:  # handed to the training loop, which raises it
                item = error
            del prepare
            self._queue.put((batch, item))
            if isinstance(item, BaseException):
                return
            batch += 1

    def next(self, expected: int) -> Batch:
        number, item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        assert number == expected, f"prefetched batch {number} where {expected} was due"
        return item

    def stop(self) -> None:
        """Stop the thread; what it prepared is dropped (the sampling state lies in the batch count)."""
        self._stopping.set()
        if threading.current_thread() is self._thread:  # the replay was collected here: the loop ends by itself
            return
        # Emptying the queue frees a thread blocked on a full one: its put lands, it sees the flag and ends.
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        self._thread.join()
