"""NPZ archives holding the D4RL arrays (see `d4rl`)."""

from __future__ import annotations

import numpy as np

from workers.files.d4rl import from_arrays
from workers.files.raw import FormatError, RawTransitions


def read_npz(path: str) -> RawTransitions:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as error:
        raise FormatError(f"{path} is not a readable NPZ archive: {error}", "file") from error
    return from_arrays(arrays, path)
