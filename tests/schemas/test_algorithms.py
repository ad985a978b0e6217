import pytest
from pydantic import ValidationError

from schemas.algorithms import ALGORITHM_PARAMS, AWACParams, BCParams, COMBOParams, CQLParams, IQLParams


def test_paper_defaults():
    iql = IQLParams()
    assert (iql.expectile, iql.temperature, iql.max_advantage_weight, iql.actor_schedule) == (0.7, 3.0, 100.0, "cosine")
    assert (iql.batch_size, iql.gamma, iql.hidden_sizes, iql.tau) == (256, 0.99, [256, 256], 0.005)
    cql = CQLParams()
    assert (cql.conservative_weight, cql.sampled_actions, cql.lagrange_threshold) == (5.0, 10, None)
    combo = COMBOParams()
    assert (combo.ensemble_size, combo.elites, combo.rollout_length, combo.real_ratio) == (7, 5, 5, 0.5)
    assert BCParams().loss == "mse"
    awac = AWACParams()  # the paper's and d3rlpy's; CORL differs in batch size (256) and weighting ("clipped")
    assert (awac.lam, awac.weighting, awac.sampled_actions, awac.max_advantage_weight) == (1.0, "softmax", 1, 100.0)
    assert (awac.batch_size, awac.actor_lr, awac.critic_lr, awac.tau, awac.gamma) == (1024, 3e-4, 3e-4, 0.005, 0.99)


def test_every_algorithm_has_a_params_model():
    assert set(ALGORITHM_PARAMS) == {"iql", "cql", "combo", "bc", "awac"}


@pytest.mark.parametrize(
    "model, params, field",
    [
        (IQLParams, {"expectile": 1.0}, "expectile"),
        (IQLParams, {"temperature": 0}, "temperature"),
        (IQLParams, {"gamma": 1.0}, "gamma"),
        (IQLParams, {"hidden_sizes": []}, "hidden_sizes"),
        (CQLParams, {"sampled_actions": 0}, "sampled_actions"),
        (CQLParams, {"lagrange_threshold": -1}, "lagrange_threshold"),
        (BCParams, {"loss": "huber"}, "loss"),
        (BCParams, {"gamma": 0.9}, "gamma"),  # BC has no discount: unknown here
        (COMBOParams, {"real_ratio": 1.5}, "real_ratio"),
        (IQLParams, {"expectiel": 0.8}, "expectiel"),
        (AWACParams, {"lam": 0}, "lam"),
        (AWACParams, {"lam": 1001}, "lam"),
        (AWACParams, {"weighting": "rank"}, "weighting"),
        (AWACParams, {"max_advantage_weight": 0}, "max_advantage_weight"),
        (AWACParams, {"sampled_actions": 0}, "sampled_actions"),
        (AWACParams, {"sampled_actions": 101}, "sampled_actions"),
        (AWACParams, {"batch_size": 0}, "batch_size"),
        (AWACParams, {"expectile": 0.7}, "expectile"),  # an IQL parameter: unknown here
    ],
)
def test_bad_params_name_the_field(model, params, field):
    with pytest.raises(ValidationError) as error:
        model.model_validate(params)
    assert any(field in map(str, item["loc"]) for item in error.value.errors())


def test_combo_elites_cannot_exceed_the_ensemble():
    with pytest.raises(ValidationError, match="elites"):
        COMBOParams(ensemble_size=3, elites=5)
