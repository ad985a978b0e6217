"""What identifies a transition file's content: its digest, and the episode ids made up from it.

The digest names an upload (the client derives its idempotency key from it), so the same file sent
twice to a dataset adds one version. Files that state no episode ids (D4RL, NPZ, Minari) get ids from
the digest as well, so the same content always carries the same ids, whatever the dataset holds:
`UPLOADED_ID_FLAG | digest bits << EPISODE_INDEX_BITS | episode index`, as collected episodes are
numbered from their job's id (under another flag bit, so the two never meet). A salt gives a
deliberate second copy ids of its own.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from workers.files.raw import FormatError, RawTransitions

UPLOADED_ID_FLAG = 1 << 61
"""Set in every made-up episode id; collected episodes set bit 62 instead, stated ids are usually small."""
DIGEST_BITS = 37
EPISODE_INDEX_BITS = 24
MAX_DERIVED_EPISODES = 1 << EPISODE_INDEX_BITS

_READ_BYTES = 1 << 20


def content_digest(path: str | Path, raw: RawTransitions) -> str:
    """The sha256 (hex) of a file's bytes, streamed; of a folder's files (a Minari dataset) in path order;
    and of the rows `raw` holds when `path` names no local file or folder (a Minari dataset id)."""
    digest = hashlib.sha256()
    location = Path(path)
    if location.is_file():
        _add_file(digest, location)
    elif location.is_dir():
        for member in sorted(p for p in location.rglob("*") if p.is_file()):
            relative = member.relative_to(location).as_posix().encode()
            digest.update(len(relative).to_bytes(8, "big") + relative + member.stat().st_size.to_bytes(8, "big"))
            _add_file(digest, member)
    else:
        for column in (raw.observations, raw.actions, raw.rewards, raw.next_observations, raw.terminals, raw.truncateds):
            values = np.ascontiguousarray(column)
            digest.update(f"{values.dtype.str}{values.shape}".encode())
            digest.update(values.tobytes())
    return digest.hexdigest()


def derived_episode_base(digest: str, salt: str = "") -> int:
    """The id of episode 0 of a file whose episode ids are made up; episode k gets `base + k`."""
    mixed = hashlib.sha256(f"{digest}:{salt}".encode()).digest()
    bits = int.from_bytes(mixed[:8], "big") >> (64 - DIGEST_BITS)
    return UPLOADED_ID_FLAG | (bits << EPISODE_INDEX_BITS)


def check_derived_episodes(raw: RawTransitions) -> None:
    """Refuse a file with more episodes than made-up ids can number."""
    if raw.episode_ids_derived and len(raw) and int(raw.episode_ids.max()) >= MAX_DERIVED_EPISODES:
        raise FormatError(f"the file holds more than {MAX_DERIVED_EPISODES} episodes; split it into several uploads", "file")


def _add_file(digest: "hashlib._Hash", path: Path) -> None:
    with path.open("rb") as file:
        while chunk := file.read(_READ_BYTES):
            digest.update(chunk)
