"""COMBO: the real/model mix of a batch, where the conservative term acts, the reusable dynamics model,
exact resume, the refusal of discrete actions, and learning on Pendulum."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch

from schemas.algorithms import COMBOParams
from workers.algos import combo as combo_module
from workers.algos.combo import COMBO
from workers.algos.data import Normalisation, TransitionArrays
from workers.algos.replay import Batch, ReplayBuffer
from workers.algos.training import fit, train
from workers.rollouts.behaviour import CARTPOLE_SPEC, PENDULUM_SPEC, cartpole_dataset, pendulum_dataset
from workers.rollouts.evaluate import evaluate

from .conftest import COMBO_SMALL


@pytest.fixture(scope="module")
def pendulum() -> TransitionArrays:
    return pendulum_dataset("medium", episodes=5, seed=0)


def make_combo(data: TransitionArrays, seed: int = 0, **overrides: Any) -> COMBO:
    params = COMBOParams(**{**COMBO_SMALL, **overrides})
    return COMBO(params, PENDULUM_SPEC, Normalisation.from_arrays(data), torch.device("cpu"), seed)


def real_buffer(algorithm: COMBO, data: TransitionArrays, seed: int = 0) -> ReplayBuffer:
    return ReplayBuffer.from_arrays(data, algorithm.normalisation, PENDULUM_SPEC.action, algorithm.device, seed)


def assert_same_state(first: Any, second: Any, where: str = "state") -> None:
    if isinstance(first, dict):
        assert first.keys() == second.keys(), where
        for key in first:
            assert_same_state(first[key], second[key], f"{where}.{key}")
    elif isinstance(first, (list, tuple)):
        assert len(first) == len(second), where
        for index, (a, b) in enumerate(zip(first, second)):
            assert_same_state(a, b, f"{where}[{index}]")
    elif isinstance(first, torch.Tensor):
        assert torch.equal(first, second), where
    else:
        assert first == second, where


@pytest.mark.parametrize("real_ratio", [0.25, 0.5, 0.75])
def test_batch_mixes_dataset_and_model_rows_at_real_ratio(pendulum: TransitionArrays, real_ratio: float) -> None:
    algorithm = make_combo(pendulum, real_ratio=real_ratio)
    algorithm.prepare(pendulum)
    seen: list[Batch] = []
    inner_step = algorithm._update
    algorithm._update = lambda batch: seen.append(batch) or inner_step(batch)  # type: ignore[method-assign]
    real = real_buffer(algorithm, pendulum).sample(64)
    algorithm.update(real)

    mixed = seen[0]
    real_rows = round(64 * real_ratio)
    assert mixed.rewards.shape == (64,)
    for given, used in zip(real, mixed):
        assert torch.equal(used[:real_rows], given[:real_rows])
    model = algorithm.model_buffer
    stored = torch.cat([model.observations[: len(model)], model.actions[: len(model)]], dim=1)
    drawn = torch.cat([mixed.observations[real_rows:], mixed.actions[real_rows:]], dim=1)
    # every remaining row is one the rollouts put in the model buffer
    assert (drawn[:, None, :] == stored[None, :, :]).all(dim=-1).any(dim=1).all()
    assert len(model) > 0


def q_shifts_over_50_updates(data: TransitionArrays, conservative_weight: float) -> tuple[float, float]:
    """How 50 updates move mean Q at far-off model states and on dataset rows, from seed 0 each time:
    runs that differ only in the conservative weight see the same batches and random numbers."""
    torch.manual_seed(0)
    # A huge rollout interval keeps the model buffer as planted below for the whole run.
    algorithm = make_combo(data, conservative_weight=conservative_weight, critic_lr=3e-3, rollout_interval=10_000)
    algorithm.prepare(data)
    real = real_buffer(algorithm, data)
    algorithm.update(real.sample(64))
    # Model states far from every dataset state (standardised observations lie within about +-2).
    capacity = algorithm.model_buffer.capacity
    far = torch.full((capacity, 3), 6.0)
    zeros = torch.zeros(capacity)
    algorithm.model_buffer.add(Batch(far, torch.rand(capacity, 1) * 2 - 1, zeros, far, zeros))
    probe_actions = torch.linspace(-1, 1, 64)[:, None]
    dataset_rows = real.sample(512)

    def q_values() -> tuple[float, float]:
        with torch.no_grad():
            at_model_states = algorithm.critic(far[:64], probe_actions).mean().item()
            on_dataset = algorithm.critic(dataset_rows.observations, dataset_rows.actions).mean().item()
        return at_model_states, on_dataset

    model_before, dataset_before = q_values()
    for _ in range(50):
        algorithm.update(real.sample(64))
        algorithm.step += 1
    model_after, dataset_after = q_values()
    return model_after - model_before, dataset_after - dataset_before


def test_conservative_term_lowers_q_at_model_states_and_raises_it_on_dataset_rows(
    pendulum: TransitionArrays,
) -> None:
    # Against a control without the term: the Bellman error alone also moves Q (on these rows it
    # lowers it), so only the difference between the runs is the conservative term's doing.
    model_shift, dataset_shift = q_shifts_over_50_updates(pendulum, conservative_weight=50.0)
    control_model_shift, control_dataset_shift = q_shifts_over_50_updates(pendulum, conservative_weight=0.0)
    assert model_shift < control_model_shift
    assert dataset_shift > control_dataset_shift


def test_discrete_dataset_is_refused() -> None:
    data = cartpole_dataset(episodes=2, seed=0)
    with pytest.raises(ValueError, match="continuous actions only"):
        COMBO(COMBOParams(**COMBO_SMALL), CARTPOLE_SPEC, Normalisation.from_arrays(data), torch.device("cpu"), 0)
    with pytest.raises(ValueError, match="continuous actions only"):
        fit("combo", data, CARTPOLE_SPEC, steps=1, seed=0, params=COMBO_SMALL)


class PartsInMemory(dict[str, bytes]):
    """`PreparedParts` in a dict, as the service keeps them for a dataset version."""

    def put(self, key: str, blob: bytes) -> None:
        self[key] = blob


def test_prepare_stores_the_dynamics_it_trains_and_a_later_run_reuses_them_to_the_same_result(
    pendulum: TransitionArrays, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = PartsInMemory()
    trained = make_combo(pendulum, seed=1)
    assert trained.prepare(pendulum, parts) == {"dynamics": "trained"}
    assert trained.dynamics_summary["dynamics_epochs"] >= 1
    assert parts == {trained.dynamics_key(): trained.dynamics_bytes()}
    train(trained, real_buffer(trained, pendulum, seed=1), 25, 64)

    def no_training(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("prepare trained a dynamics model although one was stored")

    monkeypatch.setattr(combo_module, "fit_dynamics", no_training)
    reused = make_combo(pendulum, seed=1)
    assert reused.prepare(pendulum, parts) == {"dynamics": "reused"}
    assert reused.dynamics_summary == {}
    assert len(parts) == 1
    train(reused, real_buffer(reused, pendulum, seed=1), 25, 64)
    # Same dynamics weights, and the same random numbers drawn afterwards: the cache changes nothing.
    assert_same_state(trained.state_dict(), reused.state_dict())


def test_dynamics_given_directly_are_reused(pendulum: TransitionArrays) -> None:
    trained = make_combo(pendulum)
    trained.prepare(pendulum)
    given = make_combo(pendulum)
    given.load_dynamics(trained.dynamics_bytes())
    assert given.prepare(pendulum) == {"dynamics": "reused"}
    assert given.dynamics is not None and trained.dynamics is not None
    assert_same_state(given.dynamics.dynamics_state(), trained.dynamics.dynamics_state())


def test_dynamics_with_other_sizes_is_refused(pendulum: TransitionArrays) -> None:
    trained = make_combo(pendulum)
    trained.prepare(pendulum)
    other = make_combo(pendulum, dynamics_hidden_sizes=[16])
    with pytest.raises(ValueError, match="hidden_sizes"):
        other.load_dynamics(trained.dynamics_bytes())
    assert other.dynamics_key() != trained.dynamics_key()


def test_fine_tuning_trains_dynamics_for_the_new_data_and_starts_rollouts_afresh(pendulum: TransitionArrays) -> None:
    parent = make_combo(pendulum)
    parent.prepare(pendulum)
    train(parent, real_buffer(parent, pendulum), 15, 64)
    newer = pendulum_dataset("medium", episodes=5, seed=10)
    child = make_combo(newer)
    child.load_state_dict(parent.state_dict())
    child.prepare(newer)
    assert child.dynamics is not None and parent.dynamics is not None
    assert child.dynamics_summary["dynamics_epochs"] >= 1
    assert not torch.equal(child.dynamics.input_mean, parent.dynamics.input_mean)
    assert len(child.model_buffer) == 0


def test_resume_from_checkpoint_is_bit_identical(pendulum: TransitionArrays) -> None:
    straight, _ = fit("combo", pendulum, PENDULUM_SPEC, steps=40, seed=3, params=COMBO_SMALL)

    halfway: list[dict[str, Any]] = []
    fit(
        "combo",
        pendulum,
        PENDULUM_SPEC,
        steps=40,
        seed=3,
        params=COMBO_SMALL,
        should_stop=lambda: bool(halfway),
        on_checkpoint=halfway.append,
        checkpoint_every=25,
    )
    saved = io.BytesIO()
    torch.save(halfway[0], saved)
    state = torch.load(io.BytesIO(saved.getvalue()), weights_only=True)
    assert state["algorithm"]["step"] == 25
    resumed, _ = fit("combo", pendulum, PENDULUM_SPEC, steps=40, seed=3, params=COMBO_SMALL, resume_from=state)
    assert_same_state(straight.state_dict(), resumed.state_dict())


@pytest.mark.slow
def test_learns_pendulum_from_the_medium_dataset() -> None:
    data = pendulum_dataset("medium", episodes=50, seed=0)
    # Small networks, faster learning rates and a cooler start for SAC's temperature fit the time budget.
    params = dict(
        hidden_sizes=[64, 64],
        actor_lr=1e-3,
        critic_lr=1e-3,
        initial_entropy_temperature=0.1,
        sampled_actions=4,
        rollout_batch_size=2000,
        rollout_interval=250,
        dynamics_hidden_sizes=[64, 64],
        max_dynamics_epochs=30,
    )
    algorithm, _ = fit("combo", data, PENDULUM_SPEC, steps=3000, seed=0, params=params)
    result = evaluate(algorithm.policy(), "Pendulum-v1", episodes=10, seed=100)
    # Random actions score about -1200, the dataset's episodes -394 on average, the expert -166.
    assert result["mean"] > -400
