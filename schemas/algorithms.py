"""Validated parameters of each training algorithm, with the papers' defaults in one place.

Jobs carry these as `params`; unknown names and out-of-range values are refused with a message
naming the field. Defaults train well on any reward scale because training rescales rewards from
the dataset's statistics (see `workers/algos/data.py`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

LearningRate = Annotated[float, Field(gt=0.0, le=1.0)]
HiddenSizes = Annotated[list[Annotated[int, Field(ge=1, le=4096)]], Field(min_length=1, max_length=8)]


class TrainingParams(BaseModel):
    """Fields every algorithm shares."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(default=256, ge=1, le=65536, description="transitions per gradient step")
    hidden_sizes: HiddenSizes = Field(default=[256, 256], description="hidden layer widths of every network")
    actor_lr: LearningRate = Field(default=3e-4, description="policy learning rate")
    compile: bool = Field(
        default=False, description="torch.compile the update step (CUDA graphs and capturable Adam on CUDA)"
    )


class ValueLearningParams(TrainingParams):
    """Fields of the algorithms that learn a value function."""

    gamma: float = Field(default=0.99, ge=0.0, lt=1.0, description="discount factor")
    critic_lr: LearningRate = Field(default=3e-4, description="Q-function learning rate")
    tau: float = Field(default=0.005, gt=0.0, le=1.0, description="target network soft-update rate")


class IQLParams(ValueLearningParams):
    """Implicit Q-Learning (Kostrikov, Nair and Levine, 2021)."""

    expectile: float = Field(default=0.7, gt=0.0, lt=1.0, description="tau of the expectile regression of V on Q")
    temperature: float = Field(default=3.0, gt=0.0, le=1000.0, description="beta of the advantage weight exp(beta A)")
    max_advantage_weight: float = Field(default=100.0, gt=0.0, description="the advantage weight is clipped here")
    value_lr: LearningRate = Field(default=3e-4, description="V-function learning rate")
    actor: Literal["gaussian", "deterministic"] = Field(
        default="gaussian", description="continuous actions: Gaussian (advantage-weighted log-likelihood) or MSE"
    )
    actor_schedule: Literal["cosine", "constant"] = Field(
        default="cosine", description="actor learning rate: cosine decay to zero over the run, or constant"
    )


class CQLParams(ValueLearningParams):
    """Conservative Q-Learning (Kumar, Zhou, Tucker and Levine, 2020): CQL(H) on SAC, or on Q-learning
    for discrete actions."""

    actor_lr: LearningRate = Field(default=1e-4, description="policy learning rate (the paper's 1e-4)")
    conservative_weight: float = Field(
        default=5.0, ge=0.0, le=1000.0, description="alpha: weight of the conservative term (5 or 10 in the paper)"
    )
    sampled_actions: int = Field(
        default=10, ge=1, le=100, description="actions sampled per state from each of: uniform, pi(s), pi(s')"
    )
    lagrange_threshold: float | None = Field(
        default=None,
        gt=0.0,
        description="tau of the Lagrange variant: tune alpha so the conservative gap stays at this value",
    )
    lagrange_lr: LearningRate = Field(default=3e-4, description="learning rate of log alpha (Lagrange variant)")
    entropy_lr: LearningRate = Field(default=1e-4, description="learning rate of SAC's log temperature")
    initial_entropy_temperature: float = Field(default=1.0, gt=0.0, le=100.0, description="SAC's starting temperature")
    target_entropy: float | None = Field(
        default=None, description="SAC's entropy target; None means minus the action dimension"
    )
    backup_entropy: bool = Field(default=False, description="subtract the entropy bonus in the Bellman target")
    bc_steps: int = Field(
        default=0,
        ge=0,
        description="the policy first clones the dataset's actions for this many steps (the paper code's "
        "policy_eval_start), then follows Q",
    )


class BCParams(TrainingParams):
    """Behaviour cloning, the baseline."""

    actor_lr: LearningRate = Field(default=1e-3, description="policy learning rate")
    loss: Literal["mse", "nll"] = Field(
        default="mse",
        description="continuous actions: mean squared error of a deterministic policy, or Gaussian negative "
        "log-likelihood; discrete actions always use cross-entropy",
    )


class AWACParams(ValueLearningParams):
    """Advantage-Weighted Actor-Critic (Nair, Gupta, Dalal and Levine, 2020). Continuous actions only.

    Defaults follow d3rlpy's `AWACConfig`, after the paper: batch 1024, lambda 1, learning rates 3e-4, tau
    0.005, twin critics, weights normalised by a softmax over the batch, one sampled action for V, and
    2 x 256 networks. CORL's `awac.py` differs in batch size (256), networks (3 x 256) and weighting: it
    clips exp(A / lambda) at 100 instead of normalising (`weighting="clipped"`).
    """

    batch_size: int = Field(default=1024, ge=1, le=65536, description="transitions per gradient step (CORL: 256)")
    lam: float = Field(
        default=1.0, gt=0.0, le=1000.0, description="lambda: the advantage weight is exp(A / lambda); smaller is greedier"
    )
    weighting: Literal["softmax", "clipped"] = Field(
        default="softmax",
        description="softmax: exp(A / lambda) normalised over the batch (paper, d3rlpy); clipped: exp(A / lambda) "
        "capped at max_advantage_weight (CORL)",
    )
    max_advantage_weight: float = Field(
        default=100.0, gt=0.0, description="the cap of the clipped weighting (CORL's exp_adv_max)"
    )
    sampled_actions: int = Field(
        default=1, ge=1, le=100, description="actions drawn from pi(s) to estimate V(s) in A = Q(s, a) - V(s)"
    )


class COMBOParams(CQLParams):
    """Conservative Offline Model-Based Policy Optimisation (Yu, Kumar, Rafailov, Rajeswaran, Levine and Finn,
    2021): CQL(H) on a batch mixing dataset and model-rollout transitions, whose conservative term pushes Q down
    at the model's states and up on the dataset's transitions. Continuous actions only."""

    hidden_sizes: HiddenSizes = Field(
        default=[256, 256, 256], description="hidden layer widths of the actor and critics (the paper's 3 x 256)"
    )
    conservative_weight: float = Field(
        default=1.0, ge=0.0, le=1000.0, description="beta: weight of the conservative term (0.5, 1 or 5 in the paper)"
    )
    real_ratio: float = Field(
        default=0.5, gt=0.0, lt=1.0, description="f: fraction of each batch from the dataset, the rest from the model"
    )
    rollout_length: int = Field(default=5, ge=1, le=1000, description="h: model steps per rollout from dataset states")
    rollout_batch_size: int = Field(
        default=50_000, ge=1, le=10_000_000, description="rollouts started from dataset states at each refresh"
    )
    rollout_interval: int = Field(default=1000, ge=1, description="gradient steps between rollout refreshes")
    model_retain_refreshes: int = Field(
        default=5, ge=1, le=1000, description="the model buffer keeps the rollouts of this many refreshes"
    )
    ensemble_size: int = Field(default=7, ge=1, le=64, description="dynamics models trained")
    elites: int = Field(default=5, ge=1, le=64, description="models with the lowest held-out error, used in rollouts")
    dynamics_hidden_sizes: HiddenSizes = Field(
        default=[200, 200, 200, 200], description="hidden layer widths of each dynamics model"
    )
    dynamics_lr: LearningRate = Field(default=1e-3, description="dynamics learning rate")
    dynamics_weight_decay: float = Field(default=2.5e-5, ge=0.0, le=1.0, description="L2 penalty on dynamics weights")
    dynamics_batch_size: int = Field(default=256, ge=1, le=65536, description="transitions per dynamics step")
    holdout_fraction: float = Field(default=0.2, gt=0.0, lt=1.0, description="share of transitions held out")
    max_holdout: int = Field(default=1000, ge=1, description="at most this many transitions held out")
    early_stopping_patience: int = Field(
        default=5, ge=1, le=1000, description="epochs without a 1% held-out improvement before stopping"
    )
    max_dynamics_epochs: int = Field(default=200, ge=1, le=100_000, description="upper bound on dynamics epochs")

    @model_validator(mode="after")
    def _consistent(self) -> COMBOParams:
        if self.elites > self.ensemble_size:
            raise ValueError(f"elites ({self.elites}) cannot exceed ensemble_size ({self.ensemble_size})")
        real_rows = round(self.batch_size * self.real_ratio)
        if not 1 <= real_rows < self.batch_size:
            raise ValueError(
                f"real_ratio {self.real_ratio} of batch_size {self.batch_size} leaves {real_rows} dataset rows; "
                "a batch needs at least one dataset row and one model row"
            )
        return self


ALGORITHM_PARAMS: dict[str, type[TrainingParams]] = {
    "iql": IQLParams,
    "cql": CQLParams,
    "combo": COMBOParams,
    "bc": BCParams,
    "awac": AWACParams,
}
"""Each algorithm's name, as jobs and the CLI spell it, and its parameter model."""
