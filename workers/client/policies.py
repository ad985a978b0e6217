"""The policy registry: trained policies, their cards and their files."""

from __future__ import annotations

import shutil
from pathlib import Path

from schemas.policies import POLICY_FILES, PolicyPublic
from workers.client.http import ClientCore, segment


def _policy(policy_id: str) -> str:
    return f"/v1/policies/{segment(policy_id)}"


class Policies(ClientCore):
    def list_policies(self, *, dataset: str | None = None) -> list[PolicyPublic]:
        return self._paginate(PolicyPublic, "/v1/policies", {"dataset": dataset} if dataset else None)

    def get_policy(self, policy_id: str) -> PolicyPublic:
        return self._model(PolicyPublic, "GET", _policy(policy_id))

    def delete_policy(self, policy_id: str) -> None:
        self._request("DELETE", _policy(policy_id))

    def policy_artifact(self, policy_id: str, format: str = "onnx") -> bytes:
        return self._request("GET", f"{_policy(policy_id)}/artifact", params={"format": format}).content

    def download_policy(
        self, policy_id: str, out_dir: str | Path, formats: tuple[str, ...] = ("onnx", "torch", "card")
    ) -> dict[str, Path]:
        """Write the policy's files into `out_dir` under their `POLICY_FILES` names (the layout `fit --out` writes).

        Each file replaces its old self only once it is complete; a download that fails leaves no partial
        file, and no folder it made.
        """
        out = Path(out_dir)
        made = [folder for folder in (out, *out.parents) if not folder.exists()]
        out.mkdir(parents=True, exist_ok=True)
        written: dict[str, Path] = {}
        partial: Path | None = None
        try:
            for format in formats:
                path = out / POLICY_FILES[format]
                partial = path.with_name(path.name + ".part")
                partial.write_bytes(self.policy_artifact(policy_id, format))
                partial.replace(path)
                written[format] = path
        except BaseException:
            if made:
                shutil.rmtree(made[-1], ignore_errors=True)
            elif partial is not None:
                partial.unlink(missing_ok=True)
            raise
        return written
