"""Gradient steps per second of our IQL, CQL, AWAC and BC beside d3rlpy 2.8.1, measured in the same run.

    bash benchmarks/setup_baseline_venv.sh          # once: d3rlpy in .venv-bench
    .venv/bin/python benchmarks/train_speed.py [--threads 1 2] [--rounds 2] [--device cpu] [--no-bfloat16]

Same data (Hopper-shaped: 11-d observations, 3-d actions in [-1, 1], 1000-step episodes), network
sizes (256, 256), batch 256, device and thread count for both; each side's own training loop, sampling
included, timed after a warm-up. d3rlpy runs in .venv-bench through a subprocess
(benchmarks/d3rlpy_baseline.py); the rounds alternate ours and theirs so load from other processes
hits both alike, and the best round counts. Besides wall-clock steps/s the table shows steps per
CPU-second of the process: on a shared machine that figure moves far less with other load.
The like-for-like comparison is float32 on both sides; our opt-in bfloat16 mixed precision
(`train(..., precision="bfloat16")`) is measured too and shown apart, against the same d3rlpy float32.
Without .venv-bench only our side is measured and the d3rlpy columns (and ratios) show nan.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import has_baseline

ROOT = Path(__file__).resolve().parent.parent
BASELINE_SCRIPT = ROOT / "benchmarks" / "d3rlpy_baseline.py"
DEFAULT_STEPS = {"iql": 300, "cql": 30, "bc": 1000, "awac": 300}
OBSERVATION_SIZE, ACTION_SIZE, EPISODE_LENGTH = 11, 3, 1000


def hopper_shaped(rows: int, seed: int) -> dict[str, np.ndarray]:
    """Random transitions with Hopper's sizes, in the D4RL layout plus next observations."""
    rng = np.random.default_rng(seed)
    observations = rng.standard_normal((rows + 1, OBSERVATION_SIZE)).astype(np.float32)
    return {
        "observations": observations[:-1],
        "next_observations": observations[1:],
        "actions": rng.uniform(-1.0, 1.0, (rows, ACTION_SIZE)).astype(np.float32),
        "rewards": rng.standard_normal(rows).astype(np.float32),
        "terminals": np.zeros(rows, dtype=bool),
        "timeouts": (np.arange(rows) % EPISODE_LENGTH) == EPISODE_LENGTH - 1,
        "action_low": -np.ones(ACTION_SIZE, np.float32),
        "action_high": np.ones(ACTION_SIZE, np.float32),
        "mean_episode_length": np.float64(EPISODE_LENGTH),
    }


def measure_ours(algorithm: str, arrays: dict[str, np.ndarray], steps: int, warmup: int, threads: int, device: str,
                 compile: bool, precision: str) -> dict[str, float]:
    import torch

    from schemas.dataset import ContinuousActionSpec, DatasetSpec, ObservationSpec
    from workers.algos.data import Normalisation, TransitionArrays
    from workers.algos.replay import ReplayBuffer
    from workers.algos.training import make_algorithm, train

    torch.set_num_threads(threads)
    rows = len(arrays["rewards"])
    data = TransitionArrays(
        observations=arrays["observations"],
        actions=arrays["actions"],
        rewards=arrays["rewards"],
        next_observations=arrays["next_observations"],
        terminals=arrays["terminals"],
        truncateds=arrays["timeouts"],
        episode_ids=np.arange(rows, dtype=np.int64) // EPISODE_LENGTH,
        steps=(np.arange(rows) % EPISODE_LENGTH).astype(np.int32),
    )
    spec = DatasetSpec(
        observation=ObservationSpec(shape=[OBSERVATION_SIZE]),
        action=ContinuousActionSpec(shape=[ACTION_SIZE], low=[-1.0] * ACTION_SIZE, high=[1.0] * ACTION_SIZE),
    )
    normalisation = Normalisation.from_arrays(data)
    params = {"batch_size": 256, "hidden_sizes": [256, 256], "compile": compile}
    trained = make_algorithm(algorithm, params, spec, normalisation, device, seed=0, total_steps=warmup + steps)
    replay = ReplayBuffer.from_arrays(data, normalisation, spec.action, trained.device, seed=0)
    train(trained, replay, warmup, 256, precision=precision)
    synchronise(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    # progress_every > steps: the loop reads metrics back once, at the end, as a long run would rarely
    train(trained, replay, warmup + steps, 256, progress_every=warmup + steps + 1, precision=precision)
    synchronise(device)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return {"steps_per_s": steps / elapsed, "steps_per_cpu_s": steps / cpu,
            "flops_per_step": flops_per_step(trained, replay)}


def flops_per_step(algorithm, replay) -> float:
    """Matrix-product FLOPs of one update, forward and backward (torch's FLOP counter; one extra update)."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = replay.sample(256)
    with FlopCounterMode(display=False) as counter:
        algorithm.update(batch)
    return float(counter.get_total_flops())


def matmul_flops_per_s(threads: int, device: str) -> float:
    """This device's float32 rate on the critics' largest product ([7936, 256] x [256, 256]), best of 5;
    main() keeps the best over its rounds."""
    import torch

    torch.set_num_threads(threads)
    left, right = torch.randn(7936, 256, device=device), torch.randn(256, 256, device=device)
    repeats, best = 20, float("inf")
    for _ in range(5):
        synchronise(device)
        start = time.perf_counter()
        for _ in range(repeats):
            torch.mm(left, right)
        synchronise(device)
        best = min(best, time.perf_counter() - start)
    return 2 * 7936 * 256 * 256 * repeats / best


def synchronise(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def measure_d3rlpy(python: Path, data: Path, algorithm: str, steps: int, warmup: int, threads: int,
                   device: str) -> dict[str, float]:
    command = [
        str(python), str(BASELINE_SCRIPT), "speed", "--data", str(data), "--algorithm", algorithm,
        "--steps", str(steps), "--warmup", str(warmup), "--threads", str(threads), "--device", device,
    ]
    environment = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    finished = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"d3rlpy run failed:\n{finished.stderr[-3000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", nargs="+", default=["iql", "cql", "awac", "bc"],
                        choices=["iql", "cql", "awac", "bc"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the timed steps (more: steadier)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="our compiled update (warm-up excluded)")
    parser.add_argument("--no-bfloat16", dest="bfloat16", action="store_false",
                        help="skip our bfloat16 mixed-precision runs")
    parser.add_argument("--baseline-python", type=Path, default=ROOT / ".venv-bench" / "bin" / "python")
    args = parser.parse_args()
    baseline_present = has_baseline(args.baseline_python)

    if args.bfloat16 and args.device == "cpu":
        import torch

        from workers.algos.training import native_bfloat16

        if not native_bfloat16(torch.device("cpu")):
            print("bfloat16 runs skipped: this CPU has no bfloat16 matrix instructions (emulated, ~50x slower)",
                  file=sys.stderr)
            args.bfloat16 = False
    arrays = hopper_shaped(args.rows, seed=0)
    results: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    matmul_rates: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        data_path = Path(folder) / "hopper_shaped.npz"
        np.savez(data_path, **arrays)
        for round_index in range(args.rounds):
            for algorithm in args.algorithms:
                steps = max(1, int(DEFAULT_STEPS[algorithm] * args.scale))
                for threads in args.threads:
                    ours = measure_ours(algorithm, arrays, steps, args.warmup, threads, args.device, args.compile,
                                        "float32")
                    results.setdefault(("ours", algorithm, threads), []).append(ours)
                    line = f"ours {ours['steps_per_s']:.1f}/s"
                    if baseline_present:
                        theirs = measure_d3rlpy(args.baseline_python, data_path, algorithm, steps, args.warmup,
                                                threads, args.device)
                        results.setdefault(("d3rlpy", algorithm, threads), []).append(theirs)
                        line += f", d3rlpy {theirs['steps_per_s']:.1f}/s"
                    if args.bfloat16:
                        mixed = measure_ours(algorithm, arrays, steps, args.warmup, threads, args.device,
                                             args.compile, "bfloat16")
                        results.setdefault(("ours-bf16", algorithm, threads), []).append(mixed)
                        line += f", ours bfloat16 {mixed['steps_per_s']:.1f}/s"
                    print(f"round {round_index + 1} {algorithm} {threads} thread(s): {line}", file=sys.stderr)
            # Each round, so the best rate comes from the same spells of machine speed as the steps/s.
            for threads in args.threads:
                rate = matmul_flops_per_s(threads, args.device)
                matmul_rates[threads] = max(rate, matmul_rates.get(threads, 0.0))

    def best(side: str, algorithm: str, threads: int, key: str) -> float:
        """The best round's figure; NaN for d3rlpy when it was not measured."""
        runs = results.get((side, algorithm, threads))
        return max(r[key] for r in runs) if runs else float("nan")

    print(f"device {args.device}, {args.rows} rows, batch 256, hidden (256, 256), best of {args.rounds} rounds, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    sides = [("ours", "float32")] + ([("ours-bf16", "bfloat16 mixed precision")] if args.bfloat16 else [])
    for side, label in sides:
        print()
        print(f"ours {label} vs d3rlpy float32, same thread count:")
        header = f"{'algorithm':<10}{'threads':>8}{'ours/s':>10}{'d3rlpy/s':>10}{'ratio':>8}" \
                 f"{'ours/cpu-s':>12}{'d3rlpy/cpu-s':>14}{'ratio':>8}"
        print(header)
        print("-" * len(header))
        for algorithm in args.algorithms:
            for threads in args.threads:
                ours_wall, theirs_wall = best(side, algorithm, threads, "steps_per_s"), best(
                    "d3rlpy", algorithm, threads, "steps_per_s")
                ours_cpu, theirs_cpu = best(side, algorithm, threads, "steps_per_cpu_s"), best(
                    "d3rlpy", algorithm, threads, "steps_per_cpu_s")
                wall = f"{ours_wall:>10.1f}{theirs_wall:>10.1f}{ours_wall / theirs_wall:>7.2f}x"
                cpu = f"{ours_cpu:>12.1f}{theirs_cpu:>14.1f}{ours_cpu / theirs_cpu:>7.2f}x"
                print(f"{algorithm:<10}{threads:>8}{wall}{cpu}")
    print()
    print("how far float32 can go here: an update's matrix-product FLOPs (the same math as d3rlpy's) at this")
    print("device's best float32 matmul rate, as if nothing else took any time:")
    header = f"{'algorithm':<10}{'threads':>8}{'GFLOP/step':>12}{'GFLOP/s':>9}{'ceiling/s':>11}" \
             f"{'ceiling/d3rlpy':>16}{'ours/ceiling':>14}"
    print(header)
    print("-" * len(header))
    for threads in args.threads:
        rate = matmul_rates[threads]
        for algorithm in args.algorithms:
            flops = results[("ours", algorithm, threads)][-1]["flops_per_step"]
            ceiling = rate / flops
            theirs, ours = best("d3rlpy", algorithm, threads, "steps_per_s"), best("ours", algorithm, threads, "steps_per_s")
            print(f"{algorithm:<10}{threads:>8}{flops / 1e9:>12.3f}{rate / 1e9:>9.0f}{ceiling:>11.1f}"
                  f"{ceiling / theirs:>15.2f}x{ours / ceiling:>13.0%}")
    print()
    print("each at its best thread count (wall clock; d3rlpy always float32):")
    for algorithm in args.algorithms:
        theirs_best = max(best("d3rlpy", algorithm, t, "steps_per_s") for t in args.threads)
        target = " (target 3x)" if algorithm in ("iql", "cql") else ""
        for side, label in sides:
            ours_best = max(best(side, algorithm, t, "steps_per_s") for t in args.threads)
            print(f"  {algorithm} ({label}): ours {ours_best:.1f} steps/s, d3rlpy {theirs_best:.1f} steps/s, "
                  f"{ours_best / theirs_best:.2f}x{target}")


if __name__ == "__main__":
    main()
