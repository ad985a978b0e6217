"""A file's content digest and the episode ids made up from it: the same content, the same ids."""

from __future__ import annotations


from tests.factories import d4rl_npz
from workers import files
from workers.files.digest import EPISODE_INDEX_BITS, UPLOADED_ID_FLAG


def digest(path) -> str:
    return files.content_digest(path, files.read_file(path))


def test_a_file_is_known_by_its_bytes_not_its_name(tmp_path) -> None:
    first = d4rl_npz(tmp_path / "a.npz", episodes=3, seed=0, length=4, observation_size=2)
    copy = tmp_path / "elsewhere.npz"
    copy.write_bytes(first.read_bytes())
    other = d4rl_npz(tmp_path / "b.npz", episodes=3, seed=1, length=4, observation_size=2)

    assert digest(first) == digest(copy)
    assert digest(first) != digest(other)


def test_a_folder_is_known_by_its_files_whatever_order_they_were_written_in(tmp_path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for folder, order in ((one, ["data/main.hdf5", "metadata.json"]), (two, ["metadata.json", "data/main.hdf5"])):
        for name in order:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(name.encode())
    raw = files.read_file(d4rl_npz(tmp_path / "rows.npz", episodes=3, seed=0, length=4, observation_size=2))

    assert files.content_digest(one, raw) == files.content_digest(two, raw)
    (two / "metadata.json").rename(two / "renamed.json")
    assert files.content_digest(one, raw) != files.content_digest(two, raw)


def test_made_up_episode_ids_come_from_the_content_and_a_salt_moves_them(tmp_path) -> None:
    path = d4rl_npz(tmp_path / "rows.npz", episodes=3, seed=0, length=4, observation_size=2)
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
