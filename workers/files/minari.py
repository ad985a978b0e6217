"""Minari datasets, by local id (under MINARI_DATASETS_PATH) or by folder; needs the `minari` package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from schemas.dataset import DatasetSpec, DiscreteActionSpec, ObservationSpec
from workers.files.raw import FormatError, RawTransitions


def read_minari(dataset: str) -> RawTransitions:
    """A Minari dataset by local id (under MINARI_DATASETS_PATH) or by its folder (the one holding `data/`)."""
    try:
        import minari
        from minari.dataset.minari_dataset import MinariDataset
    except ImportError as error:
        raise FormatError("reading Minari datasets needs the `minari` package (and pillow)", "format") from error
    from gymnasium import spaces

    folder = Path(dataset)
    try:
        if (folder / "data").is_dir():
            loaded = MinariDataset(str(folder / "data"))
        elif (folder / "metadata.json").is_file():
            loaded = MinariDataset(str(folder))
        else:
            loaded = minari.load_dataset(dataset)
    except (FileNotFoundError, ValueError) as error:
        raise FormatError(f"no local Minari dataset {dataset!r}: {error}", "file") from error

    observation_space, action_space = loaded.observation_space, loaded.action_space
    if not isinstance(observation_space, spaces.Box):
        raise FormatError(f"Minari observations must be a Box space, not {observation_space}", "observations")
    if not isinstance(action_space, (spaces.Box, spaces.Discrete)):
        raise FormatError(f"Minari actions must be a Box or Discrete space, not {action_space}", "actions")

    parts: dict[str, list[np.ndarray]] = {key: [] for key in ("obs", "next", "act", "rew", "term", "trunc", "ep", "step")}
    for index, episode in enumerate(loaded.iterate_episodes()):
        length = len(episode)
        observations = np.asarray(episode.observations, dtype=np.float32)
        parts["obs"].append(observations[:length])
        parts["next"].append(observations[1 : length + 1])
        parts["act"].append(np.asarray(episode.actions))
        parts["rew"].append(np.asarray(episode.rewards, dtype=np.float32))
        parts["term"].append(np.asarray(episode.terminations, dtype=bool))
        parts["trunc"].append(np.asarray(episode.truncations, dtype=bool))
        parts["ep"].append(np.full(length, index, dtype=np.int64))
        parts["step"].append(np.arange(length, dtype=np.int32))
    if not parts["obs"]:
        raise FormatError(f"Minari dataset {dataset!r} has no episodes", "file")
    merged = {key: np.concatenate(values) for key, values in parts.items()}

    actions = merged["act"]
    if isinstance(action_space, spaces.Discrete):
        actions = actions.astype(np.int64).reshape(-1) - int(action_space.start)
        action_spec: Any = DiscreteActionSpec(n=int(action_space.n))
        bounds = None
    else:
        actions = actions.astype(np.float32)
        low, high = action_space.low.reshape(-1), action_space.high.reshape(-1)
        bounds = (low.astype(np.float64), high.astype(np.float64)) if np.all(np.isfinite(low) & np.isfinite(high)) else None
        action_spec = None
    env_id = loaded.env_spec.id if loaded.env_spec is not None else None
    spec = None
    if action_spec is not None:
        spec = DatasetSpec(observation=ObservationSpec(shape=list(observation_space.shape)), action=action_spec, env_id=env_id)
    return RawTransitions(
        observations=merged["obs"],
        actions=actions,
        rewards=merged["rew"],
        next_observations=merged["next"],
        terminals=merged["term"],
        truncateds=merged["trunc"],
        episode_ids=merged["ep"],
        steps=merged["step"],
        spec=spec,
        action_bounds=bounds,
        env_id=env_id,
        episode_ids_derived=True,
    )
