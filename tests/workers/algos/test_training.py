"""The training loop: progress reports, stopping, checkpoints, resume and the compiled path."""

from __future__ import annotations

import contextlib

import pytest
import torch

from workers.algos.data import Normalisation
from workers.algos.replay import ReplayBuffer
from workers.algos.training import fit, make_algorithm, native_bfloat16, train
from workers.rollouts.behaviour import PENDULUM_SPEC

PARAMS = {"hidden_sizes": [16], "batch_size": 16}


def iql(small_pendulum, steps, params=PARAMS):
    normalisation = Normalisation.from_arrays(small_pendulum)
    algorithm = make_algorithm("iql", params, PENDULUM_SPEC, normalisation, "cpu", 0, steps)
    return algorithm, ReplayBuffer.from_arrays(small_pendulum, normalisation, PENDULUM_SPEC.action, algorithm.device, 0)


def test_progress_reports_window_means(small_pendulum):
    algorithm, replay = iql(small_pendulum, 10)
    reports = []
    result = train(algorithm, replay, 10, 16, progress_every=4, on_progress=lambda step, m: reports.append((step, m)))
    assert [step for step, _ in reports] == [4, 8, 10]
    assert set(reports[0][1]) == {"value_loss", "critic_loss", "actor_loss", "q_mean", "advantage_mean"}
    assert all(isinstance(v, float) for _, m in reports for v in m.values())
    assert result.step == 10 and not result.stopped and result.metrics == reports[-1][1]


def test_window_mean_is_the_mean_of_the_steps(small_pendulum):
    first, first_replay = iql(small_pendulum, 3)
    per_step = []
    train(first, first_replay, 3, 16, progress_every=1, on_progress=lambda s, m: per_step.append(m["critic_loss"]))
    second, second_replay = iql(small_pendulum, 3)
    windows = []
    train(second, second_replay, 3, 16, progress_every=3, on_progress=lambda s, m: windows.append(m["critic_loss"]))
    assert windows[0] == pytest.approx(sum(per_step) / 3, rel=1e-5)


def test_should_stop_checkpoints_and_returns(small_pendulum):
    algorithm, replay = iql(small_pendulum, 100)
    saved = []
    result = train(
        algorithm,
        replay,
        100,
        16,
        should_stop=lambda: algorithm.step >= 7,
        on_checkpoint=saved.append,
    )
    assert result.stopped and result.step == 7
    assert len(saved) == 1 and saved[0]["algorithm"]["step"] == 7


def test_periodic_checkpoints(small_pendulum):
    algorithm, replay = iql(small_pendulum, 10)
    steps = []
    train(algorithm, replay, 10, 16, checkpoint_every=3, on_checkpoint=lambda s: steps.append(s["algorithm"]["step"]))
    assert steps == [3, 6, 9]


def test_fit_resumes_from_a_checkpoint_to_the_same_result(small_pendulum):
    straight, _ = fit("bc", small_pendulum, PENDULUM_SPEC, 8, seed=1, params=PARAMS)
    saved = []
    fit("bc", small_pendulum, PENDULUM_SPEC, 8, seed=1, params=PARAMS, should_stop=lambda: bool(saved),
        checkpoint_every=4, on_checkpoint=saved.append)
    assert saved[0]["algorithm"]["step"] == 4
    resumed, result = fit("bc", small_pendulum, PENDULUM_SPEC, 8, seed=1, params=PARAMS, resume_from=saved[0])
    assert result.step == 8
    for a, b in zip(straight.actor.parameters(), resumed.actor.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["iql", "cql", "bc", "awac"])
def test_compiled_update_gives_the_same_numbers(name, small_pendulum, monkeypatch):
    # Inductor's C++ build takes minutes on a busy CPU, so this runs torch.compile's tracing (dynamo
    # and AOT autograd: graph breaks, optimiser steps, in-place target updates) with the eager
    # backend; inductor itself gave the same IQL numbers (to 1e-6) when tried by hand.
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, **{**kw, "backend": "aot_eager"}))
    params = {**PARAMS, "sampled_actions": 2} if name == "cql" else PARAMS
    runs = {}
    for compiled in (False, True):
        normalisation = Normalisation.from_arrays(small_pendulum)
        algorithm = make_algorithm(name, {**params, "compile": compiled}, PENDULUM_SPEC, normalisation, "cpu", 0, 4)
        replay = ReplayBuffer.from_arrays(small_pendulum, normalisation, PENDULUM_SPEC.action, algorithm.device, 0)
        reports = []
        train(algorithm, replay, 4, 16, progress_every=1, on_progress=lambda s, m: reports.append(m))
        runs[compiled] = reports
    assert len(runs[True]) == 4
    for eager, compiled in zip(runs[False], runs[True]):
        assert eager.keys() == compiled.keys()
        for key in eager:
            assert compiled[key] == pytest.approx(eager[key], rel=1e-5, abs=1e-6), key


@pytest.mark.parametrize("name", ["iql", "cql", "bc", "awac"])
def test_bfloat16_mixed_precision_trains_near_the_float32_numbers(name, small_pendulum):
    params = {**PARAMS, "hidden_sizes": [64]}
    if name == "cql":
        params["sampled_actions"] = 2
    runs = {}
    for precision in ("float32", "bfloat16"):
        normalisation = Normalisation.from_arrays(small_pendulum)
        algorithm = make_algorithm(name, params, PENDULUM_SPEC, normalisation, "cpu", 0, 3)
        replay = ReplayBuffer.from_arrays(small_pendulum, normalisation, PENDULUM_SPEC.action, algorithm.device, 0)
        reports = []
        emulated = precision == "bfloat16" and not native_bfloat16(algorithm.device)
        with pytest.warns(RuntimeWarning, match="bfloat16") if emulated else contextlib.nullcontext():
            train(algorithm, replay, 3, 16, progress_every=1, precision=precision,
                  on_progress=lambda s, m: reports.append(m))
        runs[precision] = (algorithm, reports)
    (_, exact_reports), (mixed, mixed_reports) = runs["float32"], runs["bfloat16"]
    assert all(p.dtype == torch.float32 for p in mixed.policy().parameters())
    first_loss = "actor_loss" if name == "bc" else "critic_loss"
    # bfloat16 products round differently, so the numbers move, but only by rounding.
    assert mixed_reports[0][first_loss] != exact_reports[0][first_loss]
    assert mixed_reports[0][first_loss] == pytest.approx(exact_reports[0][first_loss], rel=0.05)


def test_unknown_precision_is_refused(small_pendulum):
    algorithm, replay = iql(small_pendulum, 2)
    with pytest.raises(ValueError, match="precision"):
        train(algorithm, replay, 2, 16, precision="float16")
    assert algorithm.step == 0
