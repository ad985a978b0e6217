"""The learning library: offline RL algorithms by name (`ALGORITHMS["iql"]` is the class that trains IQL).

- `base`: `OfflineAlgorithm`, what every algorithm offers, its state built from registered parts, and
  `PreparedParts`, where `prepare` finds and leaves what it builds per dataset version.
- `iql`, `cql`, `combo`, `awac`, `bc`: one algorithm each (networks and update step), over its parameter
  model in `schemas.algorithms`; COMBO is CQL with a model-based conservative gap.
- `nets`: the networks, the behaviour loss BC and IQL share, and the tools that keep updates fast.
- `dynamics`: COMBO's learned model of the environment.
- `data`: `TransitionArrays` and `Normalisation`, from Arrow tables to the device.
- `replay`: transitions on the training device, sampled there.
- `training`: the loop, checkpoints and `fit`; `export`: a trained policy as ONNX, a PyTorch program and a card.
"""

from __future__ import annotations

from workers.algos.awac import AWAC
from workers.algos.base import OfflineAlgorithm
from workers.algos.bc import BC
from workers.algos.combo import COMBO
from workers.algos.cql import CQL
from workers.algos.iql import IQL

ALGORITHMS: dict[str, type[OfflineAlgorithm]] = {
    IQL.name: IQL,
    CQL.name: CQL,
    BC.name: BC,
    COMBO.name: COMBO,
    AWAC.name: AWAC,
}
