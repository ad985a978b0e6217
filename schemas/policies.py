"""Policies: the registry's view of a trained policy and its card."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.times import UtcDatetime

PolicyFormat = Literal["onnx", "torch", "state", "card"]
"""`onnx` and `torch` (the exported program) run without this project; `state` is the full training state."""
POLICY_FILES: dict[PolicyFormat, str] = {
    "onnx": "policy.onnx",
    "torch": "policy.pt2",
    "card": "card.json",
    "state": "state.pt",
}
"""Format name -> file name, in a policy's folder, its upload archive and a download folder alike."""


class Evaluation(BaseModel):
    """Returns of the policy in its dataset's environment, as an evaluate job (or training) measured them."""

    model_config = ConfigDict(extra="allow")

    returns: list[float]
    mean: float
    std: float
    episodes: int
    job_id: str | None = None
    time: UtcDatetime | None = None


class PolicyCard(BaseModel):
    """The card.json a policy ships with. Export writes it; the registry adds provenance it knows better."""

    model_config = ConfigDict(extra="allow")

    algorithm: str
    dataset: str | None = None
    version: int | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None
    steps: int | None = None
    parent_policy: str | None = None
    job_id: str | None = None
    evaluations: list[Evaluation] = Field(default_factory=list)


class PolicyPublic(BaseModel):
    id: str
    job_id: str | None
    algorithm: str
    dataset: str
    version: int
    parent_policy: str | None
    seed: int
    params: dict[str, Any]
    formats: list[PolicyFormat]
    card: dict[str, Any]
    """The whole card: spaces, normalisation, configuration, code and torch versions, device, evaluations."""
    created_at: UtcDatetime
