"""Returns of our IQL, CQL, AWAC and BC beside d3rlpy 2.8.1's on the same generated datasets, and COMBO beside CQL.

    bash benchmarks/setup_baseline_venv.sh          # once: d3rlpy in .venv-bench
    .venv/bin/python benchmarks/quality.py [--seeds 0 1] [--scale 1.0]

Datasets, generated here:
- pendulum-medium: Pendulum-v1, 50 episodes of workers/rollouts/behaviour.py's noisy swing-up (10,000 rows).
- inverted-pendulum-medium: InvertedPendulum-v5 (MuJoCo), 60 episodes of a balancing linear controller
  run through workers/collect.py with Gaussian noise of 0.3 half-ranges; it falls over after 20 to
  1000 steps (about 15,000 rows).
Both sides train the same number of steps with the same short-run settings as tests/workers/algos/
test_learning.py (64-unit networks, policy learning rate 1e-3, CQL's temperature starting at 0.1 with
learning rate 1e-3, AWAC's batches of 256 on our side as on d3rlpy's, where the baseline script sets
every batch; everything else at each library's defaults for the algorithm, with observations
standardised, actions scaled to [-1, 1] and rewards scaled by the return spread on both sides).
Each policy is evaluated by workers/rollouts/evaluate.py on the same seeded episodes; d3rlpy's comes back as
the TorchScript policy it saves. d3rlpy trains in a subprocess of .venv-bench beside our runs; without
.venv-bench only our side runs and the d3rlpy columns stay empty.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _common import has_baseline

ROOT = Path(__file__).resolve().parent.parent
BASELINE_SCRIPT = ROOT / "benchmarks" / "d3rlpy_baseline.py"
SHORT_RUN = {"hidden_sizes": [64, 64], "actor_lr": 1e-3}
EXTRA = {
    "bc": {},
    "iql": {},
    "cql": {"entropy_lr": 1e-3, "initial_entropy_temperature": 0.1},
    "combo": {"entropy_lr": 1e-3, "max_dynamics_epochs": 30, "rollout_batch_size": 5000},
    "awac": {"batch_size": 256},
}
STEPS = {"bc": 2000, "iql": 3000, "cql": 2000, "combo": 2000, "awac": 3000}
EVALUATION_SEED = 1000
INVERTED_PENDULUM_GAINS = np.array([1.0, 10.0, 1.0, 1.0], dtype=np.float32)


@dataclass
class Dataset:
    name: str
    env_id: str
    spec: object
    arrays: object  # TransitionArrays
    behaviour_return: float


def pendulum_medium(seed: int) -> Dataset:
    from workers.algos.data import episode_returns
    from workers.rollouts.behaviour import PENDULUM_SPEC, pendulum_dataset

    arrays = pendulum_dataset("medium", 50, seed=seed)
    return Dataset("pendulum-medium", "Pendulum-v1", PENDULUM_SPEC, arrays, float(episode_returns(arrays)[0].mean()))


def inverted_pendulum_medium(seed: int) -> Dataset:
    import pyarrow as pa

    from schemas.dataset import DatasetSpec
    from schemas.jobs import GaussianExploration
    from workers.algos.data import arrays_from_arrow, episode_returns
    from workers.rollouts.collect import collect

    spec = DatasetSpec.model_validate(
        {
            "observation": {"shape": [4]},
            "action": {"kind": "continuous", "shape": [1], "low": [-3.0], "high": [3.0]},
            "env_id": "InvertedPendulum-v5",
        }
    )

    def balance(observations: np.ndarray) -> np.ndarray:
        return np.clip(observations @ INVERTED_PENDULUM_GAINS, -3.0, 3.0)[:, None].astype(np.float32)

    chunks = collect(balance, spec, job_id=f"quality-{seed}", policy_id="linear", seed=seed, episodes=60,
                     exploration=GaussianExploration(sigma=0.3), chunk_steps=10**7)
    table = pa.concat_tables(chunk.table for chunk in chunks)
    arrays = arrays_from_arrow(table)
    return Dataset("inverted-pendulum-medium", "InvertedPendulum-v5", spec, arrays,
                   float(episode_returns(arrays)[0].mean()))


def write_d4rl_npz(dataset: Dataset, path: Path) -> None:
    from workers.algos.data import episode_returns

    arrays = dataset.arrays
    np.savez(
        path,
        observations=arrays.observations,
        actions=arrays.actions,
        rewards=arrays.rewards,
        terminals=arrays.terminals,
        timeouts=arrays.truncateds,
        action_low=np.asarray(dataset.spec.action.low, np.float32),
        action_high=np.asarray(dataset.spec.action.high, np.float32),
        mean_episode_length=np.float64(episode_returns(arrays)[1].mean()),
    )


def train_ours(algorithm: str, dataset: Dataset, seed: int, scale: float, episodes: int) -> dict:
    import torch

    from workers.algos.training import fit
    from workers.rollouts.evaluate import evaluate

    torch.set_num_threads(1)
    steps = max(1, int(STEPS[algorithm] * scale))
    start = time.perf_counter()
    trained, _ = fit(algorithm, dataset.arrays, dataset.spec, steps, seed,
                     params={**SHORT_RUN, **EXTRA[algorithm]})
    seconds = time.perf_counter() - start
    result = evaluate(trained.policy(), dataset.env_id, episodes=episodes, seed=EVALUATION_SEED)
    return {"mean": result["mean"], "std": result["std"], "score": result["normalised_score"], "seconds": seconds}


def train_d3rlpy(python: Path, algorithm: str, data: Path, out: Path, seed: int, scale: float) -> dict:
    steps = max(1, int(STEPS[algorithm] * scale))
    extra = EXTRA[algorithm]
    command = [
        str(python), str(BASELINE_SCRIPT), "train", "--data", str(data), "--algorithm", algorithm,
        "--steps", str(steps), "--seed", str(seed), "--out", str(out), "--threads", "1",
        "--hidden", *map(str, SHORT_RUN["hidden_sizes"]), "--actor-lr", str(SHORT_RUN["actor_lr"]),
        "--entropy-lr", str(extra.get("entropy_lr", 1e-4)),
        "--initial-temperature", str(extra.get("initial_entropy_temperature", 1.0)),
    ]
    environment = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    finished = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"d3rlpy {algorithm} failed:\n{finished.stderr[-3000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def evaluate_torchscript(path: Path, env_id: str, episodes: int) -> dict:
    import torch

    from workers.rollouts.evaluate import evaluate

    module = torch.jit.load(str(path))
    result = evaluate(module, env_id, episodes=episodes, seed=EVALUATION_SEED)
    return {"mean": result["mean"], "std": result["std"], "score": result["normalised_score"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["pendulum-medium", "inverted-pendulum-medium"])
    parser.add_argument("--algorithms", nargs="+", default=["bc", "iql", "cql", "combo", "awac"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step budget")
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes per policy")
    parser.add_argument("--baseline-python", type=Path, default=ROOT / ".venv-bench" / "bin" / "python")
    args = parser.parse_args()
    baseline_present = has_baseline(args.baseline_python)
    makers = {"pendulum-medium": pendulum_medium, "inverted-pendulum-medium": inverted_pendulum_medium}
    rows: list[dict] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for dataset_name in args.datasets:
            for seed in args.seeds:
                dataset = makers[dataset_name](seed)
                data_path = Path(folder) / f"{dataset_name}-{seed}.npz"
                write_d4rl_npz(dataset, data_path)
                theirs: dict[str, dict] = {}
                errors: list[BaseException] = []

                def baseline_runs() -> None:
                    # d3rlpy trains in its own process while ours trains here; quality does not depend on timing.
                    try:
                        for algorithm in (a for a in args.algorithms if a != "combo"):
                            out = Path(folder) / f"{dataset_name}-{seed}-{algorithm}.pt"
                            run = train_d3rlpy(args.baseline_python, algorithm, data_path, out, seed, args.scale)
                            theirs[algorithm] = {"path": out, "seconds": run["seconds"]}
                    except BaseException as error:  # reported after the join
                        errors.append(error)

                worker = threading.Thread(target=baseline_runs)
                if baseline_present:
                    worker.start()
                ours = {a: train_ours(a, dataset, seed, args.scale, args.episodes) for a in args.algorithms}
                if baseline_present:
                    worker.join()
                    if errors:
                        raise errors[0]
                for algorithm in args.algorithms:
                    row = {"dataset": dataset_name, "seed": seed, "algorithm": algorithm,
                           "behaviour": dataset.behaviour_return, "ours": ours[algorithm]}
                    if algorithm in theirs:
                        row["d3rlpy"] = evaluate_torchscript(theirs[algorithm]["path"], dataset.env_id, args.episodes)
                        row["d3rlpy"]["seconds"] = theirs[algorithm]["seconds"]
                    rows.append(row)
                    print(json.dumps(row, default=float), file=sys.stderr)
    print_table(rows, args, time.perf_counter() - started)


def print_table(rows: list[dict], args: argparse.Namespace, seconds: float) -> None:
    print(f"mean return over {args.episodes} evaluation episodes (seed {EVALUATION_SEED}), "
          f"training seeds {args.seeds}, step budgets x{args.scale}: "
          + ", ".join(f"{a} {int(STEPS[a] * args.scale)}" for a in args.algorithms))
    header = f"{'dataset':<26}{'algorithm':<10}{'behaviour':>10}{'ours':>10}{'(score)':>9}{'d3rlpy':>10}{'(score)':>9}"
    print(header)
    print("-" * len(header))
    for dataset_name in args.datasets:
        for algorithm in args.algorithms:
            picked = [r for r in rows if r["dataset"] == dataset_name and r["algorithm"] == algorithm]
            ours = np.mean([r["ours"]["mean"] for r in picked])
            ours_score = picked[0]["ours"]["score"]
            ours_score = np.mean([r["ours"]["score"] for r in picked]) if ours_score is not None else None
            line = f"{dataset_name:<26}{algorithm:<10}{np.mean([r['behaviour'] for r in picked]):>10.1f}{ours:>10.1f}"
            line += f"{ours_score:>9.1f}" if ours_score is not None else f"{'':>9}"
            if all("d3rlpy" in r for r in picked):
                theirs = np.mean([r["d3rlpy"]["mean"] for r in picked])
                theirs_score = np.mean([r["d3rlpy"]["score"] for r in picked])
                line += f"{theirs:>10.1f}{theirs_score:>9.1f}"
            else:
                line += f"{'-':>10}{'':>9}"
            print(line)
    print(f"({seconds / 60:.1f} minutes; COMBO has no d3rlpy counterpart: compare it with CQL on the same data)")


if __name__ == "__main__":
    main()
