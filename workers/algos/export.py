"""A trained policy as files that run without this project: ONNX, an exported PyTorch program, a card.

`policy.onnx` and `policy.pt2` both take raw float32 observations [N, *obs_shape] (any N) and return
float32 [N, *action_shape] within the action bounds, or int64 [N] for discrete actions; observation
normalisation and action scaling are inside the graph. `card.json` says what the files are.
Load them with `onnxruntime.InferenceSession("policy.onnx")` or `torch.export.load("policy.pt2").module()`.
"""

from __future__ import annotations

import copy
import json
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workers.algos.base import OfflineAlgorithm

ONNX_FILE = "policy.onnx"
PROGRAM_FILE = "policy.pt2"
CARD_FILE = "card.json"
ONNX_OPSET = 18
INPUT_NAME = "observations"
OUTPUT_NAME = "actions"


@dataclass(frozen=True)
class ExportedPolicy:
    onnx: Path
    program: Path
    card: Path


def export_policy(
    algorithm: OfflineAlgorithm, out_dir: Path | str, card_extra: dict[str, Any] | None = None
) -> ExportedPolicy:
    """Write `policy.onnx`, `policy.pt2` and `card.json` into `out_dir` (created if missing).

    `card_extra` adds fields to the card (dataset name and version, evaluation returns, job id...).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    policy = copy.deepcopy(algorithm.policy()).to("cpu").eval().requires_grad_(False)
    program = export_program(policy, algorithm.spec.observation.shape)
    paths = ExportedPolicy(out / ONNX_FILE, out / PROGRAM_FILE, out / CARD_FILE)
    torch.export.save(program, paths.program)
    onnx_program = torch.onnx.export(
        program,
        opset_version=ONNX_OPSET,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamo=True,
        verbose=False,
    )
    onnx_program.save(str(paths.onnx))
    card = policy_card(algorithm) | (card_extra or {})
    paths.card.write_text(json.dumps(card, indent=2, sort_keys=True))
    return paths


def export_program(policy: nn.Module, observation_shape: list[int]) -> torch.export.ExportedProgram:
    """torch.export of a policy with a dynamic batch dimension."""
    example = torch.zeros(2, *observation_shape)
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        return torch.export.export(policy, (example,), dynamic_shapes=({0: batch},))


def policy_card(algorithm: OfflineAlgorithm) -> dict[str, Any]:
    """What a user of the files needs to know: spaces, normalisation, algorithm, config, versions."""
    normalisation = algorithm.normalisation
    try:
        code_version = metadata.version("replaybank")
    except metadata.PackageNotFoundError:
        code_version = None
    return {
        "format": 1,
        "algorithm": algorithm.name,
        "params": algorithm.params.model_dump(mode="json"),
        "seed": algorithm.seed,
        "steps": algorithm.step,
        "observation": algorithm.spec.observation.model_dump(mode="json"),
        "action": algorithm.spec.action.model_dump(mode="json"),
        "env_id": algorithm.spec.env_id,
        "normalisation": {
            "observation_mean": normalisation.observation_mean.tolist(),
            "observation_std": normalisation.observation_std.tolist(),
            "reward_scale": normalisation.reward_scale,
        },
        "files": {
            "onnx": ONNX_FILE,
            "torch_program": PROGRAM_FILE,
            "onnx_opset": ONNX_OPSET,
            "input": INPUT_NAME,
            "output": OUTPUT_NAME,
        },
        "code_version": code_version,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": str(algorithm.device),
    }
