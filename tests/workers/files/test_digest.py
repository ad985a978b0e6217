"""A file's content digest and the episode ids made up from it: the same content, the same ids."""

from __future__ import annotations

import numpy as np

from workers import files
from workers.files.digest import EPISODE_INDEX_BITS, UPLOADED_ID_FLAG


def write_npz(path, seed: int = 0, episodes: int = 3, length: int = 4):
    rng = np.random.default_rng(seed)
    n = episodes * length
    np.savez(
        path,
        observations=rng.normal(size=(n, 2)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(n, 1)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        terminals=np.arange(n) % length == length - 1,
        timeouts=np.zeros(n, bool),
    )
    return path


def digest(path) -> str:
    return files.content_digest(path, files.read_file(path))


def test_a_file_is_known_by_its_bytes_not_its_name(tmp_path) -> None:
    first = write_npz(tmp_path / "a.npz")
    copy = tmp_path / "elsewhere.npz"
    copy.write_bytes(first.read_bytes())
    other = write_npz(tmp_path / "b.npz", seed=1)

    assert digest(first) == digest(copy)
    assert digest(first) != digest(other)


def test_a_folder_is_known_by_its_files_whatever_order_they_were_written_in(tmp_path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for folder, order in ((one, ["data/main.hdf5", "metadata.json"]), (two, ["metadata.json", "data/main.hdf5"])):
        for name in order:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(name.encode())
    raw = files.read_file(write_npz(tmp_path / "rows.npz"))

    assert files.content_digest(one, raw) == files.content_digest(two, raw)
    (two / "metadata.json").rename(two / "renamed.json")
    assert files.content_digest(one, raw) != files.content_digest(two, raw)


def test_made_up_episode_ids_come_from_the_content_and_a_salt_moves_them(tmp_path) -> None:
    path = write_npz(tmp_path / "rows.npz")
    raw = files.read_file(path)
    spec = files.infer_spec(raw)
    base = files.derived_episode_base(digest(path))

    ids = files.to_upload_table(raw, spec, base).column("episode_id").to_numpy()

    assert sorted(set(ids.tolist())) == [base, base + 1, base + 2]
    assert base & UPLOADED_ID_FLAG and not base & (1 << 62)  # never a collected episode's id
    assert base % (1 << EPISODE_INDEX_BITS) == 0
    assert files.derived_episode_base(digest(path)) == base
    salted = files.derived_episode_base(digest(path), "copy-1")
    assert salted != base and salted & UPLOADED_ID_FLAG
