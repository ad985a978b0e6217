"""The d3rlpy 2.8.1 side of the benchmarks. Runs in .venv-bench (benchmarks/setup_baseline_venv.sh), never in .venv.

It imports nothing from replaybank: it reads a D4RL-layout .npz (observations, actions, rewards,
terminals, timeouts, action_low, action_high) and prints one JSON line.

    speed: gradient steps per second of d3rlpy's own `fit` loop (sampling included), after a warm-up.
    train: fit for some steps, then save the greedy policy as TorchScript (observation and action
           scalers inside), for the caller to evaluate with the same code as its own policies.
    fqe:   d3rlpy's FQE (`FQEConfig` defaults unless set here, no scalers) of several policies on the
           data, each given as a table of its action at every observation in the data (benchmarks/ope.py
           writes it), and its estimate: the mean of Q(s0, pi(s0)) over the initial states given.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def load_dataset(path: str):
    import d3rlpy

    arrays = np.load(path)
    dataset = d3rlpy.dataset.MDPDataset(
        observations=arrays["observations"].astype(np.float32),
        actions=arrays["actions"].astype(np.float32),
        rewards=arrays["rewards"].astype(np.float32),
        terminals=arrays["terminals"].astype(np.float32),
        timeouts=arrays["timeouts"].astype(np.float32),
    )
    return dataset, arrays


def make_config(algorithm: str, arrays, args):
    """d3rlpy's config for the algorithm, with the settings our defaults use where the two differ."""
    import d3rlpy

    encoder = d3rlpy.models.VectorEncoderFactory(hidden_units=args.hidden)
    common = {"batch_size": args.batch_size}
    scaled = args.mode == "train"
    if scaled:
        low, high = arrays["action_low"], arrays["action_high"]
        common["observation_scaler"] = d3rlpy.preprocessing.StandardObservationScaler()
        common["action_scaler"] = d3rlpy.preprocessing.MinMaxActionScaler(minimum=low, maximum=high)
    if algorithm == "bc":
        return d3rlpy.algos.BCConfig(encoder_factory=encoder, learning_rate=args.actor_lr or 1e-3, **common)
    if scaled:
        # Returns spread over about one unit per step, as our reward scaling does (IQL's recipe).
        common["reward_scaler"] = d3rlpy.preprocessing.ReturnBasedRewardScaler(
            multiplier=float(arrays["mean_episode_length"])
        )
    # actor and critics of the same sizes, as ours
    common |= {"actor_encoder_factory": encoder, "critic_encoder_factory": encoder}
    if algorithm == "iql":
        # Our IQL decays the actor's learning rate with a cosine over the run, as the paper does.
        schedule = d3rlpy.optimizers.CosineAnnealingLRFactory(T_max=args.steps + (args.warmup if args.mode == "speed" else 0))
        return d3rlpy.algos.IQLConfig(
            value_encoder_factory=encoder,
            actor_learning_rate=args.actor_lr or 3e-4,
            actor_optim_factory=d3rlpy.optimizers.AdamFactory(lr_scheduler_factory=schedule),
            expectile=0.7,
            weight_temp=3.0,
            max_weight=100.0,
            **common,
        )
    if algorithm == "cql":
        # A fixed conservative weight of 5 (no Lagrange), as our CQL defaults; automatic entropy as both do.
        return d3rlpy.algos.CQLConfig(
            actor_learning_rate=args.actor_lr or 1e-4,
            critic_learning_rate=3e-4,
            temp_learning_rate=args.entropy_lr,
            initial_temperature=args.initial_temperature,
            conservative_weight=5.0,
            alpha_learning_rate=0.0,
            n_action_samples=10,
            **common,
        )
    if algorithm == "awac":
        # lambda 1 and one action sampled from the policy for V, as our AWAC defaults (d3rlpy's own too).
        return d3rlpy.algos.AWACConfig(
            actor_learning_rate=args.actor_lr or 3e-4,
            critic_learning_rate=3e-4,
            lam=1.0,
            n_action_samples=1,
            **common,
        )
    raise SystemExit(f"unknown algorithm {algorithm}")


def device_name(device: str) -> str:
    """d3rlpy wants an index: cpu -> cpu:0, cuda -> cuda:0."""
    return device if ":" in device else f"{device}:0"


def fit(algo, dataset, steps: int) -> None:
    import d3rlpy

    algo.fit(
        dataset,
        n_steps=steps,
        n_steps_per_epoch=steps,
        show_progress=False,
        save_interval=10**9,
        logger_adapter=d3rlpy.logging.NoopAdapterFactory(),
    )


class TablePolicy:
    """A fixed policy as d3rlpy's FQE calls it (`predict_best_action` on a batch of next observations),
    answered from a table of the policy's action at each observation the data holds. d3rlpy puts zeros
    after a terminal, so the table must hold the zero observation too."""

    def __init__(self, observations: np.ndarray, actions: np.ndarray, device: str) -> None:
        import torch

        self.rows = {row.tobytes(): index for index, row in enumerate(observations)}
        self.actions = torch.as_tensor(actions, dtype=torch.float32, device=device)
        self.impl = self  # FQE asserts that its algorithm has an implementation, and calls that

    def predict_best_action(self, observations):
        found = [self.rows[row.tobytes()] for row in observations.detach().cpu().numpy().astype(np.float32)]
        return self.actions[found]


def run_fqe(dataset, args) -> dict:
    """d3rlpy's FQE of each policy in the --policies table; estimates and seconds, in the policies' order."""
    import d3rlpy

    tables = np.load(args.policies)
    observations, initial = tables["observations"], tables["initial_observations"]
    estimates, seconds = [], []
    for index in range(int(tables["policies"])):
        start = time.perf_counter()
        device = device_name(args.device)
        policy = TablePolicy(observations, tables[f"actions_{index}"], device)
        config = d3rlpy.ope.FQEConfig(
            encoder_factory=d3rlpy.models.VectorEncoderFactory(hidden_units=args.hidden),
            batch_size=args.batch_size,
            gamma=args.discount,
            learning_rate=args.fqe_lr,
            target_update_interval=args.target_interval,
        )
        fqe = d3rlpy.ope.FQE(algo=policy, config=config, device=device)
        fqe.build_with_dataset(dataset)
        fit(fqe, dataset, args.steps)
        values = fqe.predict_value(initial, tables[f"initial_actions_{index}"])
        estimates.append(float(np.mean(values)))
        seconds.append(time.perf_counter() - start)
    return {"estimates": estimates, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["speed", "train", "fqe"])
    parser.add_argument("--data", required=True)
    parser.add_argument("--algorithm", choices=["iql", "cql", "bc", "awac"], help="speed and train")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out")
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--actor-lr", type=float, default=None, help="default: the algorithm's own")
    parser.add_argument("--entropy-lr", type=float, default=1e-4)
    parser.add_argument("--initial-temperature", type=float, default=1.0)
    parser.add_argument("--policies", help="fqe: the .npz of policy action tables (benchmarks/ope.py)")
    parser.add_argument("--discount", type=float, default=0.99)
    parser.add_argument("--fqe-lr", type=float, default=1e-4)
    parser.add_argument("--target-interval", type=int, default=100)
    args = parser.parse_args()
    if args.mode != "fqe" and args.algorithm is None:
        parser.error(f"{args.mode} needs --algorithm")

    import structlog
    import torch

    import d3rlpy

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    torch.set_num_threads(args.threads)
    d3rlpy.seed(args.seed)
    dataset, arrays = load_dataset(args.data)
    if args.mode == "fqe":
        print(json.dumps(run_fqe(dataset, args)))
        return
    algo = make_config(args.algorithm, arrays, args).create(device=device_name(args.device))
    algo.build_with_dataset(dataset)
    if args.mode == "speed":
        fit(algo, dataset, args.warmup)
        start, start_cpu = time.perf_counter(), time.process_time()
        fit(algo, dataset, args.steps)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        print(json.dumps({"steps_per_s": args.steps / elapsed, "steps_per_cpu_s": args.steps / cpu, "threads": args.threads}))
    else:
        start = time.perf_counter()
        fit(algo, dataset, args.steps)
        algo.save_policy(args.out)
        print(json.dumps({"seconds": time.perf_counter() - start, "policy": args.out}))


if __name__ == "__main__":
    main()
