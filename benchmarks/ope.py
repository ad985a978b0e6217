"""Off-policy evaluation on Pendulum-v1: do FQE and the model-based estimate rank policies as the environment does?

    .venv/bin/python benchmarks/ope.py [--data medium|mixed] [--episodes 100] [--fqe-steps 20000] [--threads 1]

Data: `--episodes` episodes of `workers.rollouts.behaviour`'s Pendulum data ("medium": the noisy scripted swing-up;
"mixed": alternate episodes of a lightly noisy swing-up and of random torques), of which a split holds out
30%; every estimate is computed on the held-out episodes only. Policies of graded quality:
the swing-up with more or less torque noise and more or fewer uniformly random actions (from the
noise-free expert down to uniform random torques), plus behaviour cloning fitted for a few and for many
steps on the training episodes. True value: the mean discounted return over `--true-episodes` seeded
episodes in the environment (the same discount, 200 steps). Reported per method: Spearman rank
correlation between estimates and true values, regret@1 (the true value lost by deploying the top
estimate, as a share of the spread of true values) and the mean absolute error of the estimate
normalised by that spread (DOPE, Fu et al. 2021). Targets: rank correlation >= 0.7, regret@1 <= 10%.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from schemas.splits import Split, held_out
from workers.algos.training import fit
from workers.rollouts.behaviour import PENDULUM_SPEC, noisy_pendulum_controller, pendulum_dataset, rollout
from workers.rollouts.evaluate import load_policy
from workers.ope.estimate import evaluate_offline
from workers.ope.fqe import FQESettings
from workers.ope.model_based import DynamicsSettings, fit_model

SPLIT = Split(validation_fraction=0.3, seed=0)
SCRIPTED = [
    # (name, torque noise std, share of uniformly random actions)
    ("expert", 0.0, 0.0),
    ("noise-0.3", 0.3, 0.0),
    ("noise-1.0", 1.0, 0.0),
    ("random-0.2", 0.3, 0.2),
    ("random-0.4", 0.3, 0.4),
    ("random-0.6", 0.3, 0.6),
    ("random-0.8", 0.3, 0.8),
    ("random", 0.0, 1.0),
]


def scripted_policy(noise_std: float, random_share: float, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    controller = noisy_pendulum_controller(noise_std=noise_std, random_action_probability=random_share)
    rng = np.random.default_rng(seed)
    return lambda observations: np.stack([controller(o, rng) for o in observations])


def true_value(policy: Callable[[np.ndarray], np.ndarray], episodes: int, discount: float) -> float:
    """Mean discounted return in the environment, reset seeds 10,000 and up (unlike the data's)."""
    data = rollout("Pendulum-v1", [lambda o, rng: policy(o[None].astype(np.float32))[0]], episodes, seed=10_000)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["medium", "mixed"], default="medium")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--true-episodes", type=int, default=30)
    parser.add_argument("--fqe-steps", type=int, default=20_000)
    parser.add_argument("--fqe-hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--fqe-lr", type=float, default=FQESettings.learning_rate)
    parser.add_argument("--fqe-batch", type=int, default=FQESettings.batch_size)
    parser.add_argument("--fqe-target-interval", type=int, default=FQESettings.target_update_interval)
    parser.add_argument("--discount", type=float, default=0.99)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = pendulum_dataset(args.data, args.episodes, seed=args.seed)
    validation = held_out(data.episode_ids, SPLIT)
    training = data.subset(~validation)
    policies: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = [
        (name, scripted_policy(noise, share, seed=index)) for index, (name, noise, share) in enumerate(SCRIPTED)
    ]
    for steps in (200, 5_000):
        cloned, _ = fit("bc", training, PENDULUM_SPEC, steps=steps, seed=args.seed)
        policies.append((f"bc-{steps}", load_policy(cloned.policy().eval())))

    fqe_settings = FQESettings(
        hidden_sizes=tuple(args.fqe_hidden),
        learning_rate=args.fqe_lr,
        batch_size=args.fqe_batch,
        target_update_interval=args.fqe_target_interval,
    )
    # A smaller ensemble than COMBO's default, so the benchmark runs in minutes on a CPU.
    model_settings = DynamicsSettings(ensemble_size=5, elites=3, hidden_sizes=(200, 200), max_epochs=100)
    started = time.perf_counter()
    model, summary = fit_model(data.subset(validation), model_settings, torch.device("cpu"), seed=args.seed)
    model_seconds = time.perf_counter() - started
    print(f"held-out episodes: {len(np.unique(data.episode_ids[validation]))} ({validation.sum()} rows); "
          f"dynamics fit {model_seconds:.0f} s, {summary['dynamics_epochs']:.0f} epochs")

    names, truths, fqe_values, model_values, rows = [], [], [], [], []
    print(f"{'policy':<12}{'true':>9}{'fqe':>9}{'fqe 95%':>19}{'model':>9}{'model 95%':>19}{'fqe s':>7}")
    for name, policy in policies:
        truth = true_value(policy, args.true_episodes, args.discount)
        common = dict(seed=args.seed, discount=args.discount, split=SPLIT)
        fqe = evaluate_offline(policy, data, PENDULUM_SPEC, "fqe", steps=args.fqe_steps, fqe=fqe_settings, **common)
        rolled = evaluate_offline(policy, data, PENDULUM_SPEC, "model", dynamics=model, **common)
        names.append(name)
        truths.append(truth)
        fqe_values.append(fqe.estimate)
        model_values.append(rolled.estimate)
        rows.append(fqe.rows)
        print(
            f"{name:<12}{truth:>9.1f}{fqe.estimate:>9.1f}{f'[{fqe.low:.1f}, {fqe.high:.1f}]':>19}"
            f"{rolled.estimate:>9.1f}{f'[{rolled.low:.1f}, {rolled.high:.1f}]':>19}{fqe.seconds:>7.0f}",
            flush=True,
        )
    truth_array = np.asarray(truths)
    print(f"\n{'method':<8}{'spearman':>10}{'regret@1':>10}{'norm. MAE':>11}")
    for method, values in (("fqe", fqe_values), ("model", model_values)):
        result = scores(np.asarray(values), truth_array)
        print(f"{method:<8}{result['spearman']:>10.2f}{result['regret@1']:>10.1%}{result['normalised_mae']:>11.2f}")


if __name__ == "__main__":
    main()
