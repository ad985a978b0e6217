"""Offline RL algorithms by name: `ALGORITHMS["iql"]` is the class that trains IQL."""

from __future__ import annotations

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
}
