"""The settings of every pruning method, in one torch-free module, so that a whole config (nested sections and
variants included) is parsed into typed settings when it is loaded: a wrong key or value fails before any job
runs, with its key path. The methods (graphprune.methods) import their settings from here; the package's
`__init__` does not import torch, so the config code reads this module without it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from graphprune.errors import GraphpruneError
from graphprune.methods import index

# gat_ppo
ENCODERS = ("gat", "mlp", "gat_state", "mean_state")
ACTIONS = ("binary", "ratio")
# PolicySettings.prior_score: any channel importance of index.IMPORTANCE_NAMES, or this one of gat_ppo's own
CONTRIBUTION = "contribution"
LOG_PROBS = ("mean", "joint")  # of a step's bits, for PPO's ratio: the per-bit mean or the sum (the joint)
REWARD_KINDS = ("self_competition", "ranked", "absolute")
REPAIRS = ("agent", "l1")
# amc
AMC_REWARDS = ("acc", "acc_log_flops")


@dataclass(frozen=True)
class NoSettings:
    """Settings of a method that has none."""


@dataclass(frozen=True)
class RatioSearchSettings:
    """min_ratio: per-group keep ratios are drawn uniformly from [min_ratio, 1] before scaling to the budget.
    The number of masks scored is the experiment's `search.evaluations`, as for every search method."""

    min_ratio: float = 0.05

    def __post_init__(self):
        if not (0.0 < self.min_ratio <= 1.0):
            raise GraphpruneError(f"ratio searches need min_ratio in (0, 1], got {self.min_ratio}")


@dataclass(frozen=True)
class AmcSettings:
    """Settings of `amc`; the defaults are the published code's except the search length.

    The search runs until the experiment's `search.evaluations` distinct masks are scored (the published one
    runs 800 episodes after 100 random warm-up ones). warmup_episodes: random episodes first (counted in it).
    lower_bound: smallest keep ratio an action may ask for. reward: "acc" (search accuracy) or
    "acc_log_flops" (-error * log(FLOPs)). replay_episodes: replay capacity in episodes (AMC `rmsize`, per
    layer). noise_sigma, noise_decay: truncated-normal exploration, sigma * decay ** (episode - warm-up).
    baseline_alpha: step of the moving average of minibatch rewards subtracted from the targets.
    """

    warmup_episodes: int = 50
    lower_bound: float = 0.2
    reward: str = "acc"
    hidden: int = 300
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    tau: float = 0.01
    gamma: float = 1.0
    batch_size: int = 64
    replay_episodes: int = 100
    noise_sigma: float = 0.5
    noise_decay: float = 0.95
    baseline_alpha: float = 0.5

    def __post_init__(self):
        problems = []
        if self.warmup_episodes < 0:
            problems.append("warmup_episodes must be at least 0")
        if not (0.0 < self.lower_bound <= 1.0):
            problems.append("lower_bound must be in (0, 1]")
        if self.reward not in AMC_REWARDS:
            problems.append(f"reward must be one of {', '.join(AMC_REWARDS)}")
        if min(self.hidden, self.batch_size, self.replay_episodes) < 1 or self.noise_sigma <= 0:
            problems.append("hidden, batch_size and replay_episodes must be at least 1 and noise_sigma positive")
        if problems:
            raise GraphpruneError(f"invalid amc settings: {'; '.join(problems)}, got {self}")


@dataclass(frozen=True)
class GnnRlSettings:
    """Settings of `gnnrl`. The PPO values are the published code's (lr 3e-4, gamma 0.99, clip 0.2, 10 epochs
    per update every 100 steps, value coefficient 0.5, entropy coefficient 0.01; encoder widths 50, actor 200).

    The search runs until the experiment's `search.evaluations` distinct masks are scored (the published runs
    use thousands of episodes), or `MAX_EPISODES_PER_EVALUATION` episodes per evaluation have ended.
    """

    max_steps: int = 5  # steps per episode before the -100 reward
    action_std: float = 0.5  # fixed std of the Gaussian policy
    min_keep: float = 0.1  # kept fractions are clipped to [min_keep, 1] after each step
    lr: float = 3e-4
    gamma: float = 0.99
    eps_clip: float = 0.2
    update_epochs: int = 10
    update_every_steps: int = 100
    vf_coef: float = 0.5
    ent_coef: float = 0.01
    hidden: int = 50  # GCN width of both levels
    embedding: int = 50  # graph embedding width
    actor_hidden: int = 200

    def __post_init__(self):
        problems = []
        if self.max_steps < 1 or self.update_epochs < 1 or self.update_every_steps < 1:
            problems.append("max_steps, update_epochs and update_every_steps must be at least 1")
        if not (0.0 < self.min_keep <= 1.0) or self.action_std <= 0:
            problems.append("min_keep must be in (0, 1] and action_std positive")
        if min(self.hidden, self.embedding, self.actor_hidden) < 1:
            problems.append("hidden, embedding and actor_hidden must be at least 1")
        if problems:
            raise GraphpruneError(f"invalid gnnrl settings: {'; '.join(problems)}")


@dataclass(frozen=True)
class PolicySettings:
    encoder: str = "gat"
    action: str = "binary"  # "ratio": one continuous keep ratio per group (ablation)
    hidden: int = 32
    heads: int = 2
    layers: int = 2
    # Keep logits start as prior_strength * (a channel's prior-score z-score within its group) around the
    # budget's bias: first samples already favour important channels, and the policy learns where to depart.
    prior_strength: float = 2.0
    # What that z-score is of: "contribution" (what the channel adds downstream: its activation RMS on
    # calibration images x the mean |w| of the weights reading it), which sees channels whose consumers ignore
    # them or that are constant zero; or a channel importance by name (index.IMPORTANCE_NAMES, e.g. "filter_l1",
    # the default until 2026-12-06: chosen on digits, configs/agent-defaults.yaml). Repair ranks by the same score.
    prior_score: str = "contribution"
    # Add logit(q) to every keep logit, q the keep fraction of the undecided groups that lands the mask on the
    # budget (recomputed at every step); false: a constant start at logit(sqrt(budget)) instead.
    budget_prior: bool = True
    # False: the encoder does not see the channels' weight and activation statistics (graph.CHANNEL_STATISTICS
    # zeroed; structure, cost saved and edges stay): the graph-feature ablation.
    channel_statistics: bool = True
    log_prob: str = "joint"  # "mean" let a shift of every bit at once through the clip: the policy collapsed

    def __post_init__(self):
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {self.action!r}")
        prior_scores = (*index.IMPORTANCE_NAMES, CONTRIBUTION)
        if self.prior_score not in prior_scores:
            raise ValueError(f"prior_score must be one of {prior_scores}, got {self.prior_score!r}")
        if self.log_prob not in LOG_PROBS:
            raise ValueError(f"log_prob must be one of {LOG_PROBS}, got {self.log_prob!r}")


@dataclass(frozen=True)
class RewardSettings:
    kind: str = "self_competition"
    reference: str = "quantile"  # "best" | "quantile" (self_competition)
    quantile: float = 0.9
    window: int = 256  # recent accuracies kept for the spread, quantile and rank
    spread_floor: float = 0.005
    clip: float = 3.0

    def __post_init__(self):
        if self.kind not in REWARD_KINDS:
            raise ValueError(f"reward kind must be one of {REWARD_KINDS}, got {self.kind!r}")
        if self.reference not in ("best", "quantile"):
            raise ValueError(f"reward reference must be 'best' or 'quantile', got {self.reference!r}")


@dataclass(frozen=True)
class AgentSettings:
    """Search settings of `gat_ppo` (config: `search.methods.gat_ppo`). Defaults are sized for 2 CPU cores.
    The search runs until the experiment's `search.evaluations` distinct masks are scored."""

    episodes_per_iteration: int = 32
    num_envs: int = 8
    vector_env: str = "dummy"  # "dummy" (in-process) | "subprocess"
    episode: str = "per_group"  # "per_group" | "one_shot"
    feasibility_wall: bool = False  # cut a step's kept channels when the rest could no longer meet the budget
    max_seconds: float | None = None  # stop after this much wall time (checked between iterations)
    plateau_iterations: int | None = None  # stop when the best has not improved for this many iterations
    # PPO moves the policy further per batch than the usual 1e-3 / 0.2 / 8: a step's ratio is the product over
    # up to 64 keep bits, so clip 0.2 let each bit move by about 0.2 / 64 per update and after 512 episodes the
    # greedy policy was still 12-19 points below the best sample (docs/AGENT.md, "How far PPO moves").
    lr: float = 3e-3
    eps_clip: float = 0.5
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    gae_lambda: float = 0.95
    gamma: float = 1.0  # episodic, terminal reward only
    update_repeats: int = 16
    target_kl: float | None = None  # stop an update's epochs once the approximate KL passes this (CleanRL)
    # States per PPO minibatch: each gradient step runs the static attention pass once, so 128 (64 until
    # 2026-12-06; chosen on digits, configs/agent-defaults.yaml) makes an update about 1.4x cheaper.
    batch_size: int = 128
    max_grad_norm: float = 0.5
    lagrange_lr: float = 20.0
    lagrange_tolerance: float = 0.001  # the mean overshoot allowed; 0.01 left most episodes slightly over
    lagrange_max: float = 5.0  # a larger multiplier drove the policy to prune everything (measured)
    # The budget prior's margin (policy.budget_prior): its keep fraction aims this far below the budget, by dual
    # ascent on the share of episodes over budget toward margin_target; margin_lr 0 keeps it at the budget.
    # Without the budget prior there is nothing to aim, and the margin stays 0.
    margin_lr: float = 0.03
    margin_target: float = 0.05
    repair: str = "agent"  # over-budget episodes drop the channels "agent" (its keep probabilities) or "l1" rates lowest
    greedy_every: int = 1  # score the greedy policy every this many iterations (a diagnostic: no evaluation spent)
    # False: sample the untrained policy (its L1 and budget priors, margin and multiplier still adapting) for the
    # same evaluations without any PPO update: the `gat_ppo_prior_only` control of what PPO adds.
    learn: bool = True
    policy: PolicySettings = field(default_factory=PolicySettings)
    reward: RewardSettings = field(default_factory=RewardSettings)

    def __post_init__(self):
        # Nested sections arrive as mappings from the config.
        if isinstance(self.policy, dict):
            object.__setattr__(self, "policy", PolicySettings(**self.policy))
        if isinstance(self.reward, dict):
            object.__setattr__(self, "reward", RewardSettings(**self.reward))
        if self.vector_env not in ("dummy", "subprocess"):
            raise GraphpruneError(f"search.methods.gat_ppo.vector_env must be 'dummy' or 'subprocess', got {self.vector_env!r}")
        if self.episode not in ("per_group", "one_shot"):
            raise GraphpruneError(f"search.methods.gat_ppo.episode must be 'per_group' or 'one_shot', got {self.episode!r}")
        if self.policy.action == "ratio" and self.episode != "per_group":
            raise GraphpruneError("search.methods.gat_ppo: policy.action 'ratio' needs episode 'per_group'")
        if self.episodes_per_iteration % self.num_envs:
            raise GraphpruneError("search.methods.gat_ppo.episodes_per_iteration must be a multiple of its num_envs")
        if self.repair not in REPAIRS:
            raise GraphpruneError(f"search.methods.gat_ppo.repair must be one of {', '.join(REPAIRS)}, got {self.repair!r}")
        if self.greedy_every < 1:
            raise GraphpruneError("search.methods.gat_ppo.greedy_every must be at least 1")
        if self.margin_lr < 0 or not (0.0 <= self.margin_target < 1.0):
            raise GraphpruneError("search.methods.gat_ppo: margin_lr must be >= 0 and margin_target in [0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TransferSettings:
    """Settings of `gat_ppo_transfer`: prune with a trained shared agent (docs/TRANSFER.md).

    agent: the name of an agent in the config's `agents` section, or the path of an agent.pt. The search scores
    the agent's greedy mask first, then samples with its policy until the evaluations are spent; with
    keep_training it also runs PPO updates on those samples (the agent's settings), else the policy stays fixed.
    """

    agent: str = ""
    keep_training: bool = False

    def __post_init__(self):
        if not self.agent:
            raise GraphpruneError("gat_ppo_transfer needs `agent`: an agent name from the config's agents "
                                  "section or the path of an agent.pt")


# Registry name -> settings type (the methods' `settings_type`; tests check the two agree). A method without
# settings needs no line here (`settings_type_of`).
METHOD_SETTINGS: dict[str, type] = {
    "random": NoSettings, "l1_uniform": NoSettings, "global_bn": NoSettings, "depgraph": NoSettings,
    "random_search": RatioSearchSettings, "l1_ratio_search": RatioSearchSettings,
    "depgraph_ratio_search": RatioSearchSettings,
    "amc": AmcSettings, "gnnrl": GnnRlSettings, "gat_ppo": AgentSettings, "gat_ppo_transfer": TransferSettings,
}


def settings_type_of(method: str) -> type:
    """The settings type of the registered method `method` (NoSettings where METHOD_SETTINGS has no line)."""
    return METHOD_SETTINGS.get(method, NoSettings)


def parse_settings(settings_type: type, settings: Mapping[str, Any] | object | None, where: str) -> Any:
    """Typed settings from a mapping (nested dataclass sections from nested mappings); a wrong key or value is
    one GraphpruneError naming its key path under `where` and what is allowed."""
    if settings is None:
        return settings_type()
    if isinstance(settings, settings_type):
        return settings
    if not isinstance(settings, Mapping):
        raise GraphpruneError(f"{where}: settings must be a mapping, got {type(settings).__name__}")
    fields = {f.name: f for f in dataclasses.fields(settings_type)}
    unknown = sorted(set(settings) - set(fields))
    if unknown:
        raise GraphpruneError(f"{where}: unknown setting(s) {', '.join(unknown)}; "
                              f"it accepts: {', '.join(sorted(fields)) or 'none'}")
    values = {}
    for name, value in settings.items():
        nested = _NESTED.get((settings_type, name))
        values[name] = parse_settings(nested, value, f"{where}.{name}") if nested else value
    try:
        return settings_type(**values)
    except GraphpruneError as exc:
        raise GraphpruneError(f"{where}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise GraphpruneError(f"{where}: {exc}") from exc


_NESTED = {(AgentSettings, "policy"): PolicySettings, (AgentSettings, "reward"): RewardSettings}
