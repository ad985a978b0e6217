"""What the reuse-the-dataset loop gains over offline training alone: Pendulum-v1, IQL, several seeds.

    .venv/bin/python benchmarks/reuse_loop.py [--seeds 0 1 2] [--rounds 3] [--offline-steps 3000]
        [--round-steps 1000] [--offline-episodes 10] [--random-actions 0.9] [--collect-episodes 10] [--sigma 0.2]
        [--online-fraction 0.5]

Per seed, four arms, all with the library functions a worker runs:
- loop: IQL trained offline on a weak logged dataset (`fit`), then `--rounds` rounds of: collect
  `--collect-episodes` episodes with the latest policy plus Gaussian exploration (`workers.rollouts.collect.collect`),
  append them, and fine-tune the latest policy on the grown data for `--round-steps` steps
  (`workers.runtime.train.start_from_parent`, keeping the parent's normalisation as a `train` job with
  `parent_policy` does);
- mixed: the loop again, fine-tuning with `--online-fraction` of every batch drawn from the collected
  rows (a `train` job's `online_fraction`), the rest from the logged ones;
- offline alone: the same offline policy fine-tuned the same way for the same rounds, on the offline
  data only, so each round compares equal gradient steps and the only difference is the collected data;
- from scratch: IQL trained fresh on the loop's final grown data for all its gradient steps.
Each policy is evaluated by `workers.rollouts.evaluate.evaluate` on the same seeded episodes. The table shows
mean ± std over seeds, and each row's gain over offline alone at the same step count: the return
difference (paired by seed) and the ratio of D4RL-style normalised scores (random 0, expert 100).

The logged data is deliberately weak: 10 episodes of workers/rollouts/behaviour.py's swing-up with torque noise,
90% of its steps replaced by uniformly random torques, so offline IQL stays mediocre however long it
trains and online data can help. (With 60% random steps, offline IQL given the loop's gradient steps
already matched the loop: there, more steps on the same data, not more data, was what was missing.)
Networks follow the project's short-run settings (64-unit layers, policy learning rate 1e-3), as in
benchmarks/quality.py. One torch thread.
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass, field, fields

import numpy as np
import pyarrow as pa
import torch

from schemas.jobs import GaussianExploration
from workers.algos.base import OfflineAlgorithm
from workers.algos.data import TransitionArrays, arrays_from_arrow, episode_returns
from workers.algos.replay import training_replay
from workers.algos.training import fit, make_algorithm, train
from workers.rollouts.behaviour import PENDULUM_SPEC, noisy_pendulum_controller, rollout
from workers.rollouts.collect import collect
from workers.rollouts.evaluate import evaluate, normalised_score
from workers.runtime.train import start_from_parent

ENV_ID = "Pendulum-v1"
ALGORITHM = "iql"
PARAMS = {"hidden_sizes": [64, 64], "actor_lr": 1e-3}
EVALUATION_SEED = 1000
BEHAVIOUR_NOISE_STD = 1.0
"""Torque noise of the logged swing-up controller; `--random-actions` says how often a random torque replaces it."""


@dataclass
class Stage:
    """One evaluated policy of one arm and seed."""

    arm: str
    round: int
    rows: int
    steps: int
    evaluation: float
    collected: float | None = None
    """Mean return of the episodes collected in this round (with exploration), loop rounds only."""


@dataclass
class SeedRun:
    seed: int
    behaviour: float
    stages: list[Stage] = field(default_factory=list)


def logged_dataset(episodes: int, seed: int, random_actions: float) -> TransitionArrays:
    controller = noisy_pendulum_controller(BEHAVIOUR_NOISE_STD, random_actions)
    return rollout(ENV_ID, [controller], episodes, seed)


def concatenate(first: TransitionArrays, second: TransitionArrays) -> TransitionArrays:
    """The grown dataset: what a new version holds after an append (glue: the service does this in Delta)."""
    columns = (column.name for column in fields(first))
    return TransitionArrays(**{name: np.concatenate([getattr(first, name), getattr(second, name)]) for name in columns})


def fine_tune(
    parent: OfflineAlgorithm,
    data: TransitionArrays,
    steps: int,
    seed: int,
    online: np.ndarray | None = None,
    online_fraction: float | None = None,
) -> OfflineAlgorithm:
    """A `train` job with `parent_policy` (and `online_fraction`, given the rows `online` marks) as
    workers/runtime/train.py's `run_train` runs it, minus the service.

    The child takes the parent's parameters and normalisation. The deep copy stands for the worker's
    round trip of the parent's state through a file: the child must not share optimiser moments with
    a parent that another arm fine-tunes too.
    """
    algorithm = make_algorithm(
        parent.name, parent.params, PENDULUM_SPEC, parent.normalisation, "cpu", seed, total_steps=steps
    )
    replay = training_replay(
        data, parent.normalisation, PENDULUM_SPEC.action, algorithm.device, seed, online_fraction, online
    )
    start_from_parent(algorithm, copy.deepcopy(parent.state_dict()))
    algorithm.prepare(data)
    train(algorithm, replay, steps, algorithm.params.batch_size)
    return algorithm


def collect_round(
    policy: OfflineAlgorithm, seed: int, round_index: int, episodes: int, sigma: float
) -> tuple[TransitionArrays, float]:
    """Episodes of the policy with Gaussian exploration, as a `collect` job gathers them (all in one chunk)."""
    chunks = list(
        collect(
            policy.policy(),
            PENDULUM_SPEC,
            job_id=f"reuse-loop-{seed}-{round_index}",
            policy_id=f"seed{seed}-round{round_index - 1}",
            seed=seed * 1000 + round_index,
            episodes=episodes,
            exploration=GaussianExploration(sigma=sigma),
            chunk_steps=10**9,
        )
    )
    arrays = arrays_from_arrow(pa.concat_tables(chunk.table for chunk in chunks))
    returns = [value for chunk in chunks for value in chunk.returns]
    return arrays, float(np.mean(returns))


def evaluation_return(algorithm: OfflineAlgorithm, episodes: int) -> float:
    return evaluate(algorithm.policy(), ENV_ID, episodes=episodes, seed=EVALUATION_SEED)["mean"]


def run_seed(seed: int, args: argparse.Namespace) -> SeedRun:
    offline_data = logged_dataset(args.offline_episodes, seed, args.random_actions)
    run = SeedRun(seed, float(episode_returns(offline_data)[0].mean()))

    def record(arm: str, round_index: int, data: TransitionArrays, steps: int, policy: OfflineAlgorithm,
               collected: float | None = None) -> None:
        stage = Stage(arm, round_index, len(data), steps, evaluation_return(policy, args.eval_episodes), collected)
        run.stages.append(stage)
        print(f"  seed {seed} {arm:<8} round {round_index}: rows {stage.rows}, steps {steps}, "
              f"return {stage.evaluation:.1f}" + (f", collected {collected:.1f}" if collected is not None else ""),
              flush=True)

    offline, _ = fit(ALGORITHM, offline_data, PENDULUM_SPEC, args.offline_steps, seed, params=PARAMS)
    record("offline", 0, offline_data, args.offline_steps, offline)

    grown: dict[str, TransitionArrays] = {}
    for arm, online_fraction in (("loop", None), ("mixed", args.online_fraction)):
        policy, data = offline, offline_data
        online = np.zeros(len(offline_data), bool)
        for round_index in range(1, args.rounds + 1):
            collected, collected_return = collect_round(policy, seed, round_index, args.collect_episodes, args.sigma)
            data = concatenate(data, collected)
            online = np.concatenate([online, np.ones(len(collected), bool)])
            policy = fine_tune(policy, data, args.round_steps, seed, online, online_fraction)
            steps = args.offline_steps + round_index * args.round_steps
            record(arm, round_index, data, steps, policy, collected_return)
        grown[arm] = data

    alone = offline
    for round_index in range(1, args.rounds + 1):
        alone = fine_tune(alone, offline_data, args.round_steps, seed)
        record("alone", round_index, offline_data, args.offline_steps + round_index * args.round_steps, alone)

    total_steps = args.offline_steps + args.rounds * args.round_steps
    scratch, _ = fit(ALGORITHM, grown["loop"], PENDULUM_SPEC, total_steps, seed, params=PARAMS)
    record("scratch", args.rounds, grown["loop"], total_steps, scratch)
    return run


def mean_std(values: list[float], sign: str = "") -> str:
    return f"{np.mean(values):{sign}7.1f} ± {np.std(values):5.1f}"


def print_table(runs: list[SeedRun], args: argparse.Namespace, seconds: float) -> None:
    def stages(arm: str, round_index: int) -> list[Stage]:
        return [next(s for s in run.stages if s.arm == arm and s.round == round_index) for run in runs]

    def score(values: list[float]) -> float:
        return float(normalised_score(ENV_ID, float(np.mean(values))))

    print(f"\n{ENV_ID}, {ALGORITHM.upper()} {PARAMS}, seeds {args.seeds}; evaluation return over {args.eval_episodes} "
          f"episodes (reset seeds {EVALUATION_SEED}..), mean ± std over seeds")
    print(f"logged data: {args.offline_episodes} episodes of the noisy swing-up (noise {BEHAVIOUR_NOISE_STD}, "
          f"{args.random_actions:.0%} random actions), behaviour return "
          f"{mean_std([run.behaviour for run in runs]).strip()}; each round collects {args.collect_episodes} episodes "
          f"(Gaussian noise {args.sigma}) and fine-tunes {args.round_steps} steps")
    header = (f"{'arm':<40}{'round':>5}{'rows':>7}{'steps':>7}{'collected return':>19}{'eval return':>18}"
              f"{'score':>7}{'gain vs alone':>18}{'score ratio':>12}")
    print(header)
    print("-" * len(header))
    rows: list[tuple[str, str, int]] = [("offline IQL", "offline", 0)]
    rows += [("loop: collect + fine-tune", "loop", r) for r in range(1, args.rounds + 1)]
    rows += [(f"loop, online fraction {args.online_fraction:g}", "mixed", r) for r in range(1, args.rounds + 1)]
    rows += [("offline alone: fine-tune, no new data", "alone", r) for r in range(1, args.rounds + 1)]
    rows += [("from scratch on the final data", "scratch", args.rounds)]
    for label, arm, round_index in rows:
        picked = stages(arm, round_index)
        returns = [s.evaluation for s in picked]
        collected = [s.collected for s in picked if s.collected is not None]
        line = f"{label:<40}{round_index:>5}{picked[0].rows:>7}{picked[0].steps:>7}"
        line += f"{mean_std(collected):>19}" if collected else f"{'':>19}"
        line += f"{mean_std(returns):>18}{score(returns):>7.1f}"
        if arm in ("loop", "mixed", "scratch"):
            baseline = [s.evaluation for s in stages("alone", round_index)]
            gains = [ours - theirs for ours, theirs in zip(returns, baseline)]
            line += f"{mean_std(gains, '+'):>18}{score(returns) / score(baseline):>11.2f}x"
        print(line)
    print(f"gain vs alone: return minus that of offline alone at the same gradient steps (paired by seed); "
          f"score ratio: normalised scores, the same comparison. ({seconds / 60:.1f} minutes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=3, help="collect + fine-tune rounds after the offline policy")
    parser.add_argument("--offline-steps", type=int, default=3000, help="gradient steps of the offline policy")
    parser.add_argument("--round-steps", type=int, default=1000, help="fine-tuning gradient steps per round")
    parser.add_argument("--offline-episodes", type=int, default=10, help="logged episodes (200 steps each)")
    parser.add_argument("--random-actions", type=float, default=0.9,
                        help="share of logged steps where a uniformly random torque replaces the controller's")
    parser.add_argument("--collect-episodes", type=int, default=10, help="episodes collected per round")
    parser.add_argument("--sigma", type=float, default=0.2, help="exploration noise, fraction of the action half-range")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--online-fraction", type=float, default=0.5,
                        help="the mixed arm's share of every fine-tuning batch from collected rows")
    args = parser.parse_args()
    if args.rounds < 1 or min(args.offline_steps, args.round_steps, args.offline_episodes, args.collect_episodes,
                              args.eval_episodes) < 1:
        parser.error("rounds, steps and episodes must all be at least 1")
    torch.set_num_threads(1)
    started = time.perf_counter()
    runs = [run_seed(seed, args) for seed in args.seeds]
    print_table(runs, args, time.perf_counter() - started)


if __name__ == "__main__":
    main()
