"""Transition files in and out, one module per format, chosen by name (as Minari's storage registry is).

raw.py      `RawTransitions` (what every reader produces), `FormatError`, `infer_spec`, `to_upload_table`
parquet.py  Parquet and Arrow IPC files (read; Parquet written with the spec in its metadata)
d4rl.py     the D4RL array layout (shared with NPZ and D4RL-column tables) and D4RL-layout HDF5 files
npz.py      NPZ archives of the D4RL arrays
minari.py   Minari datasets, by id or folder
digest.py   a file's content digest, and the episode ids made up from it for files that state none

This module is the registry: `FORMATS` names each format's reader, suffixes and writer; `read_file`,
`detect_format`, `write_file` and `output_format` choose among them. The format-independent API of
raw.py is exported here too, so callers need only `workers.files`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from schemas.dataset import DatasetSpec
from workers.files import d4rl, minari, npz, parquet
from workers.files.digest import check_derived_episodes, content_digest, derived_episode_base
from workers.files.raw import FormatError, RawTransitions, describe, infer_spec, to_upload_table, upload_schema

Writer = Callable[[pa.Table, "str | Path", DatasetSpec], None]


@dataclass(frozen=True)
class FileFormat:
    read: Callable[[str], RawTransitions]
    suffixes: tuple[str, ...]
    """The file name suffixes that select this format (none: chosen by name only)."""
    write: Writer | None = None
    """Writes a pulled table (the dataset's Arrow schema) in this format; None where only reading is offered."""


FORMATS: dict[str, FileFormat] = {
    "parquet": FileFormat(parquet.read_parquet, (".parquet", ".pq"), parquet.write_parquet),
    "arrow": FileFormat(parquet.read_arrow, (".arrow", ".arrows", ".ipc", ".feather")),
    "npz": FileFormat(npz.read_npz, (".npz",)),
    "hdf5": FileFormat(d4rl.read_hdf5, (".hdf5", ".h5"), d4rl.write_hdf5),
    "minari": FileFormat(minari.read_minari, ()),
}
"""Every format by name. A directory, or a name that is not a file, is a Minari dataset."""


def _by_suffix(path: str | Path, writable: bool = False) -> str | None:
    suffix = Path(path).suffix.lower()
    for name, format in FORMATS.items():
        if suffix in format.suffixes and (format.write is not None or not writable):
            return name
    return None


def detect_format(path: str | Path) -> str:
    """The format a path's name suggests; a directory or a name without a known suffix is a Minari dataset."""
    found = _by_suffix(path)
    if found is not None:
        return found
    if Path(path).is_file():
        raise FormatError(
            f"cannot tell the format of {path}; name it .parquet, .arrow, .npz or .hdf5, or pass a format",
            "format",
        )
    return "minari"


def read_file(path: str | Path, format: str | None = None) -> RawTransitions:
    """Read transitions from a file (or a Minari dataset id or folder)."""
    format = format or detect_format(path)
    if format not in FORMATS:
        raise FormatError(f"unknown format {format!r}; one of {', '.join(FORMATS)}", "format")
    if format != "minari" and not Path(path).is_file():
        raise FormatError(f"no such file: {path}", "file")
    return FORMATS[format].read(str(path))


def output_format(path: str | Path) -> str:
    """The format a path to write names by its suffix: parquet or hdf5."""
    found = _by_suffix(path, writable=True)
    if found is None:
        raise FormatError(f"can write .parquet or .hdf5 files, not {Path(path).name}", "out")
    return found


def write_file(table: pa.Table, path: str | Path, spec: DatasetSpec) -> None:
    """Write rows to a .parquet or .hdf5 (D4RL layout) file, by the path's suffix."""
    writer = FORMATS[output_format(path)].write
    assert writer is not None
    writer(table, path, spec)


__all__ = [
    "FORMATS",
    "FileFormat",
    "FormatError",
    "RawTransitions",
    "check_derived_episodes",
    "content_digest",
    "derived_episode_base",
    "describe",
    "detect_format",
    "infer_spec",
    "output_format",
    "read_file",
    "to_upload_table",
    "upload_schema",
    "write_file",
]
