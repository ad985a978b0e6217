"""Off-policy evaluation: do FQE and the model-based estimate rank policies as the environment does?

    bash benchmarks/setup_baseline_venv.sh          # once: d3rlpy in .venv-bench, for its FQE column
    .venv/bin/python benchmarks/ope.py [--env pendulum lunarlander] [--quick] [--pendulum-data medium|mixed]

Data, generated here (`workers.rollouts.behaviour`), of which a split holds out 30% of the episodes;
every estimate is computed on the held-out episodes only, and the learned policies train on the rest:
- pendulum: Pendulum-v1, 100 episodes ("medium": the noisy scripted swing-up; "mixed": alternate
  episodes of a lightly noisy swing-up and of random torques).
- lunarlander: LunarLander-v3 with continuous actions, 150 episodes, in turn from Gymnasium's landing
  heuristic with light noise, with heavy noise, and from uniformly random actions.
Policies of graded quality: the scripted controller with more or less Gaussian noise and more or fewer
uniformly random actions (from the noise-free expert down to uniform random actions), plus policies
learned on the training episodes (BC for a few and for many steps; on LunarLander also IQL and AWAC).
A scripted policy draws its noise from a generator seeded by the observation it acts on, so it is a
fixed function of the state: FQE here and d3rlpy's FQE (which asks for one action per state) see the
same actions, and in the environment it acts as freshly drawn noise would.
True value: the mean discounted return over `--true-episodes` seeded episodes in the environment
(reset seeds 10,000 and up, unlike the data's; the same discount). Reported per method: Spearman rank
correlation between estimates and true values, regret@1 (the true value lost by deploying the top
estimate, as a share of the spread of true values) and the mean absolute error of the estimate
normalised by that spread (DOPE, Fu et al. 2021). Targets: rank correlation >= 0.7, regret@1 <= 10%.
FQE on both sides: 5,000 steps of batch 100, [64, 64] networks, learning rate 3e-4 and a target refresh
every 50 steps (100 fitted iterations; d3rlpy's defaults, 1e-4 and 100, learn too slowly for a budget
that fits a shared 2-core machine). d3rlpy 2.8.1's FQE with these settings (otherwise its defaults) runs on the
same held-out data and policy actions in a subprocess of .venv-bench, beside ours; without .venv-bench
its column stays empty. `--quick` is a smoke run of minutes with small budgets; its figures mean little.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _common import has_baseline

from schemas.dataset import DatasetSpec
from schemas.splits import Split, held_out
from workers.algos.data import TransitionArrays
from workers.algos.training import fit
from workers.ope.episodes import initial_rows
from workers.ope.estimate import evaluate_offline
from workers.ope.fqe import FQESettings
from workers.ope.model_based import DynamicsSettings, fit_model
from workers.ope.policies import DatasetPolicy
from workers.rollouts import behaviour
from workers.rollouts.evaluate import load_policy

ROOT = Path(__file__).resolve().parent.parent
BASELINE_SCRIPT = ROOT / "benchmarks" / "d3rlpy_baseline.py"
SPLIT = Split(validation_fraction=0.3, seed=0)
LEARNED_PARAMS = {"hidden_sizes": [64, 64], "actor_lr": 1e-3}
Policy = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Setting:
    """One environment's benchmark: its data, its scripted policies and its learned ones."""

    name: str
    env_id: str
    env_kwargs: dict
    spec: DatasetSpec
    controller: Callable[[float, float], behaviour.Controller]
    scripted: list[tuple[str, float, float]]
    """(name, Gaussian noise std, share of uniformly random actions)"""
    learned: list[tuple[str, int]]
    """(algorithm, steps)"""
    episodes: int
    true_episodes: int


PENDULUM = Setting(
    name="pendulum",
    env_id="Pendulum-v1",
    env_kwargs={},
    spec=behaviour.PENDULUM_SPEC,
    controller=lambda noise, share: behaviour.noisy_pendulum_controller(noise, share),
    scripted=[("expert", 0.0, 0.0), ("noise-0.3", 0.3, 0.0), ("noise-1.0", 1.0, 0.0), ("random-0.2", 0.3, 0.2),
              ("random-0.4", 0.3, 0.4), ("random-0.6", 0.3, 0.6), ("random-0.8", 0.3, 0.8), ("random", 0.0, 1.0)],
    learned=[("bc", 200), ("bc", 5000)],
    episodes=100,
    true_episodes=30,
)
LUNAR_LANDER = Setting(
    name="lunarlander",
    env_id=behaviour.LUNAR_LANDER_ENV[0],
    env_kwargs=behaviour.LUNAR_LANDER_ENV[1],
    spec=behaviour.LUNAR_LANDER_SPEC,
    controller=lambda noise, share: behaviour.noisy_lunar_lander_controller(noise, share),
    scripted=[("expert", 0.0, 0.0), ("noise-0.5", 0.5, 0.0), ("random-0.25", 0.1, 0.25), ("random-0.5", 0.1, 0.5),
              ("random-0.75", 0.1, 0.75), ("random", 0.0, 1.0)],
    learned=[("bc", 300), ("bc", 5000), ("iql", 5000), ("awac", 5000)],
    episodes=150,
    true_episodes=50,
)
SETTINGS = {setting.name: setting for setting in (PENDULUM, LUNAR_LANDER)}


def observation_seeded(controller: behaviour.Controller, seed: int) -> Policy:
    """A batch policy whose randomness at a state comes from a generator seeded by that state's bytes."""

    def act(observations: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(observations, dtype=np.float32)
        return np.stack([controller(row, np.random.default_rng([seed, _digest(row)])) for row in rows])

    return act


def _digest(row: np.ndarray) -> int:
    return int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little")


def make_data(setting: Setting, episodes: int, pendulum_data: str, seed: int) -> TransitionArrays:
    if setting is PENDULUM:
        return behaviour.pendulum_dataset(pendulum_data, episodes, seed=seed)
    return behaviour.lunar_lander_dataset(episodes, seed=seed)


def make_policies(setting: Setting, training: TransitionArrays, step_scale: float, seed: int) -> list[tuple[str, Policy]]:
    policies = [(name, observation_seeded(setting.controller(noise, share), seed=index))
                for index, (name, noise, share) in enumerate(setting.scripted)]
    for algorithm, steps in setting.learned:
        steps = max(1, int(steps * step_scale))
        trained, _ = fit(algorithm, training, setting.spec, steps=steps, seed=seed, params=LEARNED_PARAMS)
        policies.append((f"{algorithm}-{steps}", load_policy(trained.policy().eval())))
    return policies


def true_value(setting: Setting, policy: Policy, episodes: int, discount: float) -> float:
    """Mean discounted return in the environment, reset seeds 10,000 and up (unlike the data's)."""
    data = behaviour.rollout(setting.env_id, [lambda o, rng: policy(o[None].astype(np.float32))[0]], episodes,
                             seed=10_000, env_kwargs=setting.env_kwargs)
    ids, inverse = np.unique(data.episode_ids, return_inverse=True)
    weights = discount ** data.steps.astype(np.float64)
    return float(np.bincount(inverse, weights=weights * data.rewards, minlength=len(ids)).mean())


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their average rank."""
    order = values.argsort(kind="stable")
    result = np.empty(len(values))
    result[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        result[tied] = result[tied].mean()
    return result


def spearman(first: np.ndarray, second: np.ndarray) -> float:
    return float(np.corrcoef(ranks(first), ranks(second))[0, 1])


def scores(estimates: np.ndarray, truths: np.ndarray) -> dict[str, float]:
    spread = truths.max() - truths.min()
    return {
        "spearman": spearman(estimates, truths),
        "regret@1": float((truths.max() - truths[estimates.argmax()]) / spread),
        "normalised_mae": float(np.abs(estimates - truths).mean() / spread),
    }


def write_baseline_inputs(evaluation: TransitionArrays, spec: DatasetSpec, policies: list[tuple[str, Policy]],
                          folder: Path) -> tuple[Path, Path]:
    """The held-out episodes in the D4RL layout and every policy's action at each of their observations."""
    data_path, tables_path = folder / "evaluation.npz", folder / "policies.npz"
    np.savez(data_path, observations=evaluation.observations, actions=evaluation.actions,
             rewards=evaluation.rewards, terminals=evaluation.terminals, timeouts=evaluation.truncateds)
    zero = np.zeros((1, evaluation.observations.shape[1]), np.float32)
    observations = np.unique(np.concatenate([evaluation.observations, evaluation.next_observations, zero]), axis=0)
    initial = evaluation.observations[initial_rows(evaluation)]
    tables: dict[str, np.ndarray] = {"observations": observations, "initial_observations": initial,
                                     "policies": np.int64(len(policies))}
    for index, (_, policy) in enumerate(policies):
        checked = DatasetPolicy(policy, spec)
        tables[f"actions_{index}"] = checked(observations)
        tables[f"initial_actions_{index}"] = checked(initial)
    np.savez(tables_path, **tables)
    return data_path, tables_path


def run_d3rlpy_fqe(python: Path, data: Path, tables: Path, args: argparse.Namespace) -> dict:
    command = [str(python), str(BASELINE_SCRIPT), "fqe", "--data", str(data), "--policies", str(tables),
               "--steps", str(args.fqe_steps), "--hidden", *map(str, args.fqe_hidden),
               "--batch-size", str(FQESettings.batch_size), "--discount", str(args.discount),
               "--fqe-lr", str(args.fqe_lr), "--target-interval", str(args.fqe_target_interval),
               "--seed", str(args.seed), "--threads", "1"]
    environment = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    finished = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"d3rlpy FQE failed:\n{finished.stderr[-3000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def benchmark(setting: Setting, args: argparse.Namespace, baseline: bool) -> None:
    started = time.perf_counter()
    episodes = args.episodes or setting.episodes
    data = make_data(setting, episodes, args.pendulum_data, args.seed)
    validation = held_out(data.episode_ids, SPLIT)
    evaluation = data.subset(validation)
    policies = make_policies(setting, data.subset(~validation), args.learned_scale, args.seed)
    label = f"{setting.name} ({args.pendulum_data})" if setting is PENDULUM else setting.name
    print(f"\n== {label}: {episodes} episodes ({len(data)} rows), held out "
          f"{len(np.unique(evaluation.episode_ids))} episodes ({len(evaluation)} rows); "
          f"{len(policies)} policies trained or made in {time.perf_counter() - started:.0f} s", flush=True)

    theirs: dict = {}
    errors: list[BaseException] = []
    folder = tempfile.TemporaryDirectory()
    worker = None
    if baseline:
        data_path, tables_path = write_baseline_inputs(evaluation, setting.spec, policies, Path(folder.name))

        def baseline_run() -> None:
            # d3rlpy's FQE runs in its own process while ours runs here, one thread each.
            try:
                theirs.update(run_d3rlpy_fqe(args.baseline_python, data_path, tables_path, args))
            except BaseException as error:  # reported after the join
                errors.append(error)

        worker = threading.Thread(target=baseline_run)
        worker.start()

    fqe_settings = FQESettings(hidden_sizes=tuple(args.fqe_hidden), learning_rate=args.fqe_lr,
                               target_update_interval=args.fqe_target_interval)
    # A smaller ensemble than COMBO's default, so the benchmark runs in minutes on a CPU.
    model_settings = DynamicsSettings(ensemble_size=5, elites=3, hidden_sizes=(200, 200),
                                      max_epochs=args.model_epochs)
    model_started = time.perf_counter()
    model, summary = fit_model(evaluation, model_settings, torch.device("cpu"), seed=args.seed)
    print(f"dynamics fit on the held-out rows: {time.perf_counter() - model_started:.0f} s, "
          f"{summary['dynamics_epochs']:.0f} epochs", flush=True)

    truths, estimates = [], {"fqe": [], "model": []}
    print(f"{'policy':<13}{'true':>9}{'fqe':>9}{'fqe 95%':>19}{'model':>9}{'model 95%':>19}{'fqe s':>7}")
    for name, policy in policies:
        truth = true_value(setting, policy, args.true_episodes or setting.true_episodes, args.discount)
        common = dict(seed=args.seed, discount=args.discount, split=SPLIT)
        fqe = evaluate_offline(policy, data, setting.spec, "fqe", steps=args.fqe_steps, fqe=fqe_settings, **common)
        rolled = evaluate_offline(policy, data, setting.spec, "model", dynamics=model, **common)
        truths.append(truth)
        estimates["fqe"].append(fqe.estimate)
        estimates["model"].append(rolled.estimate)
        print(f"{name:<13}{truth:>9.1f}{fqe.estimate:>9.1f}{f'[{fqe.low:.1f}, {fqe.high:.1f}]':>19}"
              f"{rolled.estimate:>9.1f}{f'[{rolled.low:.1f}, {rolled.high:.1f}]':>19}{fqe.seconds:>7.0f}", flush=True)
    if worker is not None:
        worker.join()
        folder.cleanup()
        if errors:
            raise errors[0]
        estimates["d3rlpy fqe"] = theirs["estimates"]
        print("d3rlpy FQE: " + ", ".join(f"{name} {value:.1f}" for (name, _), value in zip(policies, theirs["estimates"]))
              + f" ({np.mean(theirs['seconds']):.0f} s a policy)")
    truth_array = np.asarray(truths)
    print(f"\n{label}: true values from {truth_array.min():.1f} to {truth_array.max():.1f}; "
          f"FQE {args.fqe_steps} steps, {args.true_episodes or setting.true_episodes} true episodes a policy; "
          f"{(time.perf_counter() - started) / 60:.1f} minutes")
    print(f"{'method':<12}{'spearman':>10}{'regret@1':>10}{'norm. MAE':>11}   targets: spearman >= 0.7, regret@1 <= 10%")
    for method, values in estimates.items():
        result = scores(np.asarray(values), truth_array)
        met = result["spearman"] >= 0.7 and result["regret@1"] <= 0.1
        print(f"{method:<12}{result['spearman']:>10.2f}{result['regret@1']:>10.1%}{result['normalised_mae']:>11.2f}"
              f"   {'meets both' if met else 'MISSES'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--quick", action="store_true", help="a smoke run: small data, budgets and networks")
    parser.add_argument("--pendulum-data", choices=["medium", "mixed"], default="medium")
    parser.add_argument("--episodes", type=int, help="logged episodes (default: the environment's)")
    parser.add_argument("--true-episodes", type=int, help="environment episodes a policy (default: the environment's)")
    parser.add_argument("--fqe-steps", type=int, default=5_000)
    parser.add_argument("--fqe-hidden", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--fqe-lr", type=float, default=3e-4, help="FQE's learning rate (d3rlpy's default: 1e-4)")
    parser.add_argument("--fqe-target-interval", type=int, default=50,
                        help="steps between target refreshes (d3rlpy's default: 100)")
    parser.add_argument("--model-epochs", type=int, default=100, help="most epochs of the dynamics fit")
    parser.add_argument("--learned-scale", type=float, default=0.4, help="multiply the learned policies' steps")
    parser.add_argument("--discount", type=float, default=0.99)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-d3rlpy", dest="d3rlpy", action="store_false", help="skip d3rlpy's FQE")
    parser.add_argument("--baseline-python", type=Path, default=ROOT / ".venv-bench" / "bin" / "python")
    args = parser.parse_args()
    if args.quick:
        args.episodes = args.episodes or 30
        args.true_episodes = args.true_episodes or 5
        args.fqe_steps, args.fqe_hidden, args.model_epochs, args.learned_scale = 300, [32, 32], 5, 0.05
        args.fqe_target_interval = 20
    torch.set_num_threads(1)
    baseline = args.d3rlpy and has_baseline(args.baseline_python)
    for name in args.env:
        benchmark(SETTINGS[name], args, baseline)


if __name__ == "__main__":
    main()
