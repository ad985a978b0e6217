"""Artifact files beside the data: policies, job checkpoints and COMBO dynamics models.

Layout under `artifacts/` of the store (the data folder or the object-storage prefix):
  policies/<policy id>/{policy.onnx, policy.pt2, card.json, state.pt}
  checkpoints/<job id>/checkpoint.bin
  dynamics/<dataset id>/<version>/<key>.bin
Every file is received into the local `<data_dir>/artifacts/tmp/` first and then moved (or uploaded) into
place whole, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import uuid
from collections.abc import AsyncIterable
from pathlib import Path
from typing import Any

from schemas.policies import POLICY_FILES
from service.errors import ApiError
from service.storage.stores import Store, StoredFile

REQUIRED_POLICY_FORMATS = ("onnx", "torch", "card")


class InvalidArtifact(ValueError):
    """An uploaded artifact is not what it claims to be; the message says what is wrong."""


class ArtifactStorage:
    def __init__(self, store: Store, data_dir: Path) -> None:
        self.store = store
        self.tmp = data_dir / "artifacts" / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def staging_path(self) -> Path:
        """A fresh path in `tmp/` to stream an upload into; move it into place or delete it."""
        return self.tmp / uuid.uuid4().hex

    async def receive(self, body: AsyncIterable[bytes], declared_size: str | None, limit: int) -> Path:
        """Stream an uploaded artifact into a staging file, refusing it (413) as soon as it passes `limit`
        bytes and (422) when it is empty. The caller moves the file into place or deletes it."""
        too_large = ApiError(413, "payload_too_large", f"the body is larger than {limit} bytes", "body")
        if declared_size is not None and declared_size.isdigit() and int(declared_size) > limit:
            raise too_large
        staged = self.staging_path()
        size = 0
        try:
            with open(staged, "wb") as out:
                async for chunk in body:
                    size += len(chunk)
                    if size > limit:
                        raise too_large
                    out.write(chunk)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        if size == 0:
            staged.unlink(missing_ok=True)
            raise ApiError(422, "invalid", "the body is empty", "body")
        return staged

    def _stored(self, key: str) -> StoredFile | None:
        size = self.store.size(key)
        return None if size is None else StoredFile(key, size)

    # checkpoints

    @staticmethod
    def _checkpoint(job_id: str) -> str:
        return f"artifacts/checkpoints/{job_id}/checkpoint.bin"

    def put_checkpoint(self, job_id: str, staged: Path) -> None:
        self.store.put_file(self._checkpoint(job_id), staged)

    def checkpoint(self, job_id: str) -> StoredFile | None:
        return self._stored(self._checkpoint(job_id))

    def remove_checkpoint(self, job_id: str) -> None:
        self.store.delete_tree(f"artifacts/checkpoints/{job_id}")

    # policies

    @staticmethod
    def _policy(policy_id: str, name: str = "") -> str:
        return f"artifacts/policies/{policy_id}/{name}".rstrip("/")

    def put_policy(self, policy_id: str, staged_archive: Path, max_member_bytes: int) -> dict[str, Any]:
        """Unpack an uploaded tar of the policy files and put them in the policy's place; returns the card.

        Only the known file names are accepted, each at most once; onnx, torch program and card are required.
        """
        unpacked = self.tmp / f"{uuid.uuid4().hex}.d"
        unpacked.mkdir()
        try:
            found = self._unpack(staged_archive, unpacked, max_member_bytes)
            missing = [POLICY_FILES[name] for name in REQUIRED_POLICY_FORMATS if POLICY_FILES[name] not in found]
            if missing:
                raise InvalidArtifact(f"the policy archive lacks {', '.join(missing)}")
            try:
                card = json.loads((unpacked / POLICY_FILES["card"]).read_text())
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise InvalidArtifact(f"card.json is not JSON: {error}") from error
            if not isinstance(card, dict):
                raise InvalidArtifact("card.json must hold a JSON object")
            # a retried upload replaces the earlier one
            self.store.delete_tree(self._policy(policy_id))
            if self.store.renames:
                self.store.put_file(self._policy(policy_id), unpacked)
            else:
                for name in sorted(found):
                    self.store.put_file(self._policy(policy_id, name), unpacked / name)
            return card
        finally:
            shutil.rmtree(unpacked, ignore_errors=True)
            staged_archive.unlink(missing_ok=True)

    @staticmethod
    def _unpack(archive: Path, into: Path, max_member_bytes: int) -> set[str]:
        allowed = set(POLICY_FILES.values())
        found: set[str] = set()
        try:
            with tarfile.open(archive, mode="r:*") as tar:
                for member in tar:
                    if member.name not in allowed:
                        raise InvalidArtifact(
                            f"unexpected file {member.name!r} in the policy archive; allowed: {', '.join(sorted(allowed))}"
                        )
                    if not member.isfile():
                        raise InvalidArtifact(f"{member.name} must be a regular file")
                    if member.name in found:
                        raise InvalidArtifact(f"{member.name} appears twice in the policy archive")
                    if member.size > max_member_bytes:
                        raise InvalidArtifact(f"{member.name} is larger than {max_member_bytes} bytes")
                    source = tar.extractfile(member)
                    assert source is not None
                    with source, open(into / member.name, "wb") as out:
                        shutil.copyfileobj(source, out, 1 << 20)
                    found.add(member.name)
        except tarfile.TarError as error:
            raise InvalidArtifact(f"the body is not a tar archive of policy files: {error}") from error
        return found

    def write_card(self, policy_id: str, card: dict[str, Any]) -> None:
        self.store.put_bytes(self._policy(policy_id, POLICY_FILES["card"]), json.dumps(card, indent=2, sort_keys=True).encode())

    def policy_file(self, policy_id: str, format: str) -> StoredFile | None:
        return self._stored(self._policy(policy_id, POLICY_FILES[format]))

    def policy_formats(self, policy_id: str) -> list[str]:
        present = set(self.store.children(self._policy(policy_id)))
        return [name for name, file in POLICY_FILES.items() if file in present]

    def remove_policy(self, policy_id: str) -> None:
        self.store.delete_tree(self._policy(policy_id))

    # COMBO dynamics

    @staticmethod
    def _dynamics(dataset_id: str, version: int, key: str) -> str:
        return f"artifacts/dynamics/{dataset_id}/{version}/{key}.bin"

    def put_dynamics(self, dataset_id: str, version: int, key: str, staged: Path) -> None:
        self.store.put_file(self._dynamics(dataset_id, version, key), staged)

    def dynamics(self, dataset_id: str, version: int, key: str) -> StoredFile | None:
        return self._stored(self._dynamics(dataset_id, version, key))

    def dynamics_datasets(self) -> set[str]:
        """The ids of the datasets that have dynamics models."""
        return set(self.store.children("artifacts/dynamics"))

    def remove_dataset(self, dataset_id: str) -> None:
        """Everything kept for one dataset: its COMBO dynamics models."""
        self.store.delete_tree(f"artifacts/dynamics/{dataset_id}")
