import pytest
import torch

from tests.workers.ope.conftest import DISCOUNT, RandomTorques, swing_up
from workers.rollouts.behaviour import CARTPOLE_SPEC, PENDULUM_SPEC
from workers.ope.estimate import evaluate_offline
from workers.ope.model_based import DynamicsSettings, fit_model

SMALL_MODEL = DynamicsSettings(ensemble_size=3, elites=2, hidden_sizes=(64, 64), max_epochs=30, patience=5)


@pytest.fixture(scope="module")
def pendulum_model(pendulum):
    torch.set_num_threads(1)
    model, _ = fit_model(pendulum, SMALL_MODEL, torch.device("cpu"), seed=0)
    return model


def rollouts(policy, data, **kwargs):
    return evaluate_offline(policy, data, PENDULUM_SPEC, "model", discount=DISCOUNT, rollouts_per_state=4, **kwargs)


def test_the_model_ranks_the_swing_up_above_random_torques(pendulum, pendulum_model, true_pendulum_values):
    good = rollouts(swing_up, pendulum, dynamics=pendulum_model)
    bad = rollouts(RandomTorques(seed=0), pendulum, dynamics=pendulum_model)
    assert good.estimate > bad.estimate + 20.0
    assert good.estimate == pytest.approx(true_pendulum_values["good"], rel=0.15)
    assert bad.estimate == pytest.approx(true_pendulum_values["bad"], rel=0.2)
    assert good.low <= good.estimate <= good.high
    # The horizon defaults to the mean episode length; the stored model was used as it is.
    assert (good.method, good.steps, good.episodes, good.details["model_reused"]) == ("model", 200, 20, True)


def test_a_saved_model_and_a_fitted_one_both_work(pendulum, pendulum_model):
    few = pendulum.subset(pendulum.episode_ids < 4)
    saved = rollouts(swing_up, few, dynamics=pendulum_model.to_bytes(), steps=20)
    assert saved.details["model_reused"] and saved.steps == 20
    fitted = rollouts(swing_up, few, steps=20, dynamics_settings=SMALL_MODEL)
    assert not fitted.details["model_reused"] and fitted.details["dynamics_epochs"] >= 1


def test_a_model_of_other_spaces_or_discrete_actions_is_refused(pendulum, cartpole, pendulum_model):
    two_torques = PENDULUM_SPEC.action.model_copy(update={"shape": [2], "low": [-2.0] * 2, "high": [2.0] * 2})
    wide = PENDULUM_SPEC.model_copy(update={"action": two_torques})
    with pytest.raises(ValueError, match="action"):
        evaluate_offline(lambda o: o[:, :2], pendulum, wide, "model", dynamics=pendulum_model)
    with pytest.raises(ValueError, match="action: a model-based estimate needs continuous actions"):
        evaluate_offline(lambda o: o[:, 0].astype(int) * 0, cartpole, CARTPOLE_SPEC, "model")
