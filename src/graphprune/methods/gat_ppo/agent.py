"""Training loop of the pruning agent: Tianshou 2.0 PPO over vector envs, Lagrangian budget, self-competition.

One iteration: collect a batch of whole episodes, turn each episode's search accuracy into a reward against
the agent's own record (minus the Lagrangian penalty on the budget overshoot), update the multiplier by dual
ascent, run the PPO update, log every episode, checkpoint. The loop is written out here (not Tianshou's
trainer) because the rewards depend on state shared across environments. A checkpoint after every
iteration holds everything the next one depends on, so an interrupted search resumes exactly.
"""

from __future__ import annotations

import csv
import io
import logging
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tianshou.algorithm import PPO
from tianshou.algorithm.modelfree.reinforce import ProbabilisticActorPolicy
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.data import Batch, Collector, VectorReplayBuffer
from tianshou.env import DummyVectorEnv, SubprocVectorEnv
from tianshou.utils.torch_utils import policy_within_training_step
from tqdm import tqdm

from graphprune.checkpoint import atomic_torch_save, atomic_write_text, load_checkpoint
from graphprune.errors import GraphpruneError
from graphprune.methods.base import BudgetedEvaluator
from graphprune.methods.gat_ppo.env import EpisodeLayout, PruningEnv
from graphprune.methods.gat_ppo.policy import (
    GraphCritic,
    GraphEncoder,
    IndependentBernoulli,
    JointBernoulli,
    KeepActor,
    RatioActor,
    gaussian_ratio,
)
from graphprune.methods.gat_ppo.reward import BudgetMargin, LagrangeMultiplier, SelfCompetitionReward
from graphprune.methods.rl_common import MAX_EPISODES_PER_EVALUATION
from graphprune.methods.settings import AgentSettings, parse_settings
from graphprune.network.cost import Budget, CostModel
from graphprune.network.graph import NetworkGraph
from graphprune.network.pruning import Mask
from graphprune.paths import AGENT_CHECKPOINT, SEARCH_ITERATIONS, SEARCH_LOG

log = logging.getLogger(__name__)

LOG_COLUMNS = ("episode", "iteration", "reward", "search_top1", "cost_ratio", "agent_cost_ratio", "overshoot",
               "repaired_channels", "multiplier", "best_search_top1")
# One row per iteration: what was sampled, the greedy policy entering the iteration, the constraint, and PPO's
# own statistics of the update that ended it (as CleanRL logs them).
ITERATION_COLUMNS = ("iteration", "episodes", "masks_evaluated", "sampled_mean", "sampled_std", "best_search_top1",
                     "greedy_search_top1", "multiplier", "budget_margin", "mean_overshoot", "repaired_share",
                     "reward_mean",
                     "reward_std", "policy_loss", "value_loss", "update_epochs", "entropy", "approx_kl",
                     "clip_fraction", "explained_variance")
CHECKPOINT_NAME, LOG_NAME, ITERATIONS_NAME = AGENT_CHECKPOINT, SEARCH_LOG, SEARCH_ITERATIONS  # graphprune.paths
OPTIMIZERS_KEY = PPO._STATE_DICT_KEY_OPTIMIZERS  # where Tianshou's state_dict keeps the optimizer states
# Where the policy rates channels alike (at the start every keep probability is the same), the prior score decides.
PRIOR_TIE_BREAK = 1e-6




@dataclass
class SearchResult:
    mask: Mask
    search_top1: float
    episodes: int
    masks_evaluated: int
    seconds: float
    record: dict


class GatPpoSearch:
    """One agent searching masks for one (network, budget). `run()` resumes from `out_dir` if it can."""

    def __init__(self, graph: NetworkGraph, order: list[int], cost: CostModel, budget: Budget,
                 evaluator: BudgetedEvaluator, importance: list[np.ndarray], settings: AgentSettings, seed: int,
                 out_dir: str | Path, min_channels: int = 1, device: str | torch.device = "cpu"):
        self.settings, self.seed, self.budget, self.evaluator = settings, seed, budget, evaluator
        self.out_dir = Path(out_dir)
        self.network = graph.digest()  # a checkpoint of another network (or of retrained weights) is not resumed
        sizes = graph.group_sizes
        self.layout = (EpisodeLayout.per_group if settings.episode == "per_group" else EpisodeLayout.one_shot)(
            sizes, order)
        cost.check_feasible(budget)

        self.prior_scores = [np.asarray(i, dtype=np.float64) for i in importance]
        self.repair_scores = self.prior_scores  # what repair drops first: the lowest; the agent's from iteration 1

        self.margin = BudgetMargin(lr=settings.margin_lr if settings.policy.budget_prior else 0.0,
                                   target_share=settings.margin_target,
                                   max_value=budget.ratio / 2)

        def make_env(evaluate=evaluator) -> PruningEnv:
            env = PruningEnv(self.layout, cost, budget, evaluate, self.repair_scores, min_channels,
                             feasibility_wall=settings.feasibility_wall, action=settings.policy.action,
                             budget_prior=settings.policy.budget_prior)
            env.budget_margin = self.margin.value
            return env

        self.make_env = make_env
        vector_env = DummyVectorEnv if settings.vector_env == "dummy" else SubprocVectorEnv
        self.envs = vector_env([make_env for _ in range(settings.num_envs)])
        # Tianshou shuffles minibatches with numpy's global generator: seed every generator the search uses.
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        encoder = GraphEncoder(graph, settings.policy)
        binary = settings.policy.action == "binary"
        prior = settings.policy.prior_strength * np.concatenate([_z_scores(np.log(np.maximum(g, 1e-12)))
                                                                 for g in self.prior_scores])
        actor = (KeepActor(encoder, self.layout, budget.ratio, settings.policy.hidden, channel_prior=prior,
                           budget_prior=settings.policy.budget_prior) if binary
                 else RatioActor(encoder, self.layout, budget.ratio, settings.policy.hidden,
                                 budget_prior=settings.policy.budget_prior))
        critic = GraphCritic(encoder, settings.policy.hidden)
        probe = make_env()
        self.encoder = encoder
        policy = ProbabilisticActorPolicy(
            actor=actor, action_space=probe.action_space,
            dist_fn=(IndependentBernoulli if settings.policy.log_prob == "mean" else JointBernoulli) if binary
            else gaussian_ratio,
            observation_space=probe.observation_space, deterministic_eval=True, action_scaling=False,
            action_bound_method=None,
        )
        self.algorithm = MeasuredPPO(
            policy=policy, critic=critic, optim=AdamOptimizerFactory(lr=settings.lr),
            eps_clip=settings.eps_clip, ent_coef=settings.ent_coef, vf_coef=settings.vf_coef,
            gae_lambda=settings.gae_lambda, gamma=settings.gamma, max_grad_norm=settings.max_grad_norm,
            max_batchsize=settings.batch_size, target_kl=settings.target_kl,
            prepare_observations=actor.precompute_views,
        ).to(device)
        steps = len(self.layout.steps)
        # Twice the room one iteration needs, so no sub-buffer ever wraps around.
        buffer = VectorReplayBuffer(2 * settings.episodes_per_iteration * steps, settings.num_envs)
        self.collector = Collector(self.algorithm, self.envs, buffer)
        self.reward = SelfCompetitionReward(settings.reward)
        self.multiplier = LagrangeMultiplier(lr=settings.lagrange_lr, tolerance=settings.lagrange_tolerance,
                                             max_value=settings.lagrange_max)
        self.iteration = 0
        self.log_rows: list[dict] = []
        self.iteration_rows: list[dict] = []
        self.best: tuple[float, list[list[int]]] | None = None  # (search accuracy, kept indices)
        self.seconds = 0.0
        self.timing = {"collect": 0.0, "update": 0.0, "env_step": 0.0, "evaluation": 0.0}
        self.stop_reason = ""
        self.learn = settings.learn  # False: sample with the policy as it is (priors or a trained agent)

    # -- the loop ---------------------------------------------------------------------------------------------
    def run(self, stop_after_iterations: int | None = None) -> SearchResult:
        """Search until a stop criterion; `stop_after_iterations` simulates an interruption (tests)."""
        self.resume()
        s = self.settings
        evaluator = self.evaluator
        max_episodes = MAX_EPISODES_PER_EVALUATION * evaluator.limit
        progress = tqdm(total=evaluator.limit, initial=evaluator.masks_evaluated, desc=f"gat_ppo {self.budget}",
                        unit="mask", dynamic_ncols=True)
        started = time.perf_counter() - self.seconds
        best_iteration = self.iteration
        while True:
            if evaluator.exhausted:
                self.stop_reason = "evaluations"
                break
            if len(self.log_rows) >= max_episodes:
                self.stop_reason = f"{max_episodes} episodes (the policy repeats its masks)"
                break
            before, evaluated = (self.best[0] if self.best else None), evaluator.masks_evaluated
            # The last iteration runs only as many episodes as evaluations are left, so no search overshoots.
            self.iterate(min(s.episodes_per_iteration, evaluator.remaining), started=started)
            self.save_checkpoint()
            if self.best and self.best[0] != before:
                best_iteration = self.iteration
            progress.update(evaluator.masks_evaluated - evaluated)
            progress.set_postfix(best=f"{self.best[0]:.4f}", lam=f"{self.multiplier.value:.2f}")
            if stop_after_iterations is not None and self.iteration >= stop_after_iterations:
                self.stop_reason = "interrupted"
                break
            if s.max_seconds is not None and self.seconds >= s.max_seconds:
                self.stop_reason = f"wall time {s.max_seconds}s"
                break
            if s.plateau_iterations and self.iteration - best_iteration >= s.plateau_iterations:
                self.stop_reason = f"no improvement for {s.plateau_iterations} iterations"
                break
        progress.close()
        return self._result()

    def close(self) -> None:
        self.envs.close()

    def weights(self) -> dict[str, torch.Tensor]:
        """The agent's learned weights (actor, critic, encoder): everything but its network's graph and the
        optimizer, which is what a shared agent carries from one network to another."""
        return self._weights_in(self.algorithm.state_dict())

    def _weights_in(self, state: dict) -> dict[str, torch.Tensor]:
        graph = self._graph_buffers()
        return {k: v for k, v in state.items() if k not in graph and k != OPTIMIZERS_KEY}

    def load_weights(self, weights: dict[str, torch.Tensor], optimizers=None, source: str = "agent") -> None:
        """Take another agent's weights (and optimizer states) onto this network's graph; a GraphpruneError
        names what differs when they were made with other policy settings."""
        own = self.algorithm.state_dict()
        expected = self._weights_in(own)
        if set(weights) != set(expected):
            missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
            raise GraphpruneError(f"{source} does not fit this agent's policy settings (missing {missing[:3]}, "
                                  f"unexpected {extra[:3]})")
        for key, value in weights.items():
            if tuple(value.shape) != tuple(expected[key].shape):
                raise GraphpruneError(f"{source}: {key} has shape {tuple(value.shape)}, this agent's policy "
                                      f"settings give {tuple(expected[key].shape)}")
        own.update(weights)
        if optimizers is not None:
            own[OPTIMIZERS_KEY] = optimizers
        self.algorithm.load_state_dict(own)
        self.encoder.forget_static()

    def adopt(self, weights: dict[str, torch.Tensor], *, margin_fraction: float, learn: bool, source: str) -> None:
        """Start from a trained shared agent (gat_ppo_transfer): its weights, its budget margin as a fraction of
        this search's budget (capped as the margin is), and whether PPO goes on training it here."""
        self.load_weights(weights, source=source)
        self.margin.value = min(margin_fraction * self.budget.ratio, self.margin.max_value)
        self.envs.set_env_attr("budget_margin", self.margin.value)
        self.learn = learn

    def share_from(self, other: GatPpoSearch) -> None:
        """Continue training where `other` (the same agent on another network or budget) left off: its weights
        and optimizer states, this search's own graph."""
        state = other.algorithm.state_dict()
        self.load_weights(other._weights_in(state), state[OPTIMIZERS_KEY])

    def _graph_buffers(self) -> set[str]:
        return {name for name, _ in self.algorithm.named_buffers(remove_duplicate=False)}

    def start_from_greedy(self) -> float:
        """Spend the first evaluation on the greedy policy's mask and make it the best so far (a trained agent's
        first guess); returns its search accuracy."""
        mask, accuracy, _ = self._greedy_episode()
        self.evaluator.charge(mask.key(), mask, accuracy)
        if self.best is None or accuracy > self.best[0]:
            self.best = (accuracy, [list(k) for k in mask.kept])
        return accuracy

    def greedy_mask(self) -> tuple[Mask, float]:
        """Run one episode with the policy's most likely actions: (repaired mask, its search accuracy).

        A diagnostic: scored without spending the search's evaluations, and never returned as the result."""
        mask, accuracy, _ = self._greedy_episode()
        return mask, accuracy

    def keep_probabilities(self) -> np.ndarray:
        """[C]: the policy's keep probability of every channel, along its greedy episode (binary actions)."""
        if self.settings.policy.action != "binary":
            raise ValueError("keep probabilities exist for binary actions only")
        return self._greedy_episode()[2]

    def _greedy_episode(self) -> tuple[Mask, float, np.ndarray]:
        env = self.make_env(self.evaluator.unmetered)
        obs, _ = env.reset()
        done, info = False, {}
        probabilities = np.zeros(self.layout.num_channels)
        with torch.no_grad():
            for t in range(len(self.layout.steps)):
                out = self.algorithm.policy(Batch(obs=Batch({k: v[None] for k, v in obs.items()}), info={}))
                channels = self.layout.step_channels(t)
                if self.settings.policy.action == "binary":
                    probabilities[channels] = torch.sigmoid(out.logits[0, : len(channels)]).cpu().numpy()
                obs, _, done, _, info = env.step(np.asarray(out.act[0]))
        assert done, "an episode has one step per entry of the layout"
        flags = np.asarray(info["kept_flags"], dtype=bool)
        mask = Mask.from_keep_flags(np.split(flags, self.layout.offsets[1:]))
        return mask, float(info["search_top1"]), probabilities

    def iterate(self, episodes: int, started: float | None = None) -> None:
        """One iteration: collect `episodes` episodes, reward them, update the multiplier, margin and (when
        learning) the policy by PPO. `started`: the perf_counter reading the search's wall time counts from
        (what `seconds` and the checkpoint report); None leaves `seconds` as it is."""
        s = self.settings
        greedy_top1 = self._look_at_the_policy()
        t0 = time.perf_counter()
        first_episode = len(self.log_rows)
        with policy_within_training_step(self.algorithm.policy), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*should be larger than self.env_num.*")  # the last, short one
            with torch.no_grad():  # Tianshou's Collector leaves gradients on; without them the encoder's
                self.collector.collect(n_episode=episodes, reset_before_collect=True)  # static pass is cached
            t1 = time.perf_counter()
            overshoots = self._assign_rewards()
            if self.learn:
                self.algorithm.update(buffer=self.collector.buffer, batch_size=s.batch_size,
                                      repeat=s.update_repeats)
        self._log_iteration(self.log_rows[first_episode:], greedy_top1)
        self.collector.reset_buffer(keep_statistics=False)
        self.encoder.forget_static()
        self.timing["collect"] += t1 - t0
        self.timing["update"] += time.perf_counter() - t1
        # Environments count their own time (they may live in subprocesses); fold it in and restart.
        self.timing["env_step"] += float(sum(self.envs.get_env_attr("step_seconds")))
        self.timing["evaluation"] += float(sum(self.envs.get_env_attr("eval_seconds")))
        self.envs.set_env_attr("step_seconds", 0.0)
        self.envs.set_env_attr("eval_seconds", 0.0)
        self.multiplier.update(np.asarray(overshoots))
        self.envs.set_env_attr("budget_margin", self.margin.update(np.asarray(overshoots)))
        self.iteration += 1
        if started is not None:
            self.seconds = time.perf_counter() - started

    def _look_at_the_policy(self) -> float:
        """Run the greedy policy when due (or when repair needs its keep probabilities): its search accuracy (NaN
        when not run); with agent repair, the episodes that follow drop the channels it rates lowest."""
        s = self.settings
        agent_repair = s.repair == "agent" and s.policy.action == "binary"
        if not agent_repair and self.iteration % s.greedy_every:
            return float("nan")
        _, accuracy, probabilities = self._greedy_episode()
        if agent_repair:
            groups = np.split(probabilities, self.layout.offsets[1:])
            prior_ranks = [np.argsort(np.argsort(scores)) / max(len(scores), 1) for scores in self.prior_scores]
            self.repair_scores = [p + PRIOR_TIE_BREAK * r for p, r in zip(groups, prior_ranks, strict=True)]
            self.envs.set_env_attr("importance", self.repair_scores)
        return accuracy

    def _log_iteration(self, episodes: list[dict], greedy_top1: float) -> None:
        accuracies = np.asarray([e["search_top1"] for e in episodes])
        rewards = np.asarray([e["reward"] for e in episodes])
        self.iteration_rows.append({
            "iteration": self.iteration, "episodes": len(episodes), "masks_evaluated": self.evaluator.masks_evaluated,
            "sampled_mean": float(accuracies.mean()), "sampled_std": float(accuracies.std()),
            "best_search_top1": self.best[0] if self.best else float("nan"), "greedy_search_top1": greedy_top1,
            "multiplier": self.multiplier.value, "budget_margin": self.margin.value,
            "mean_overshoot": float(np.mean([e["overshoot"] for e in episodes])),
            "repaired_share": float(np.mean([e["repaired_channels"] > 0 for e in episodes])),
            "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()),
            **self.algorithm.last_stats,
        })

    def _assign_rewards(self) -> list[float]:
        """Write each finished episode's reward onto its terminal transition, in a fixed order.

        Returns each episode's overshoot, for the multiplier's update."""
        buffer = self.collector.buffer
        valid = buffer.sample_indices(0)  # filled slots only: a reset buffer keeps stale data behind them
        terminal = [int(i) for i in valid[buffer.done[valid]]]
        overshoots = []
        for index in terminal:
            info = buffer.info[index]
            accuracy, overshoot = float(info["search_top1"]), float(info["overshoot"])
            reward = self.reward(accuracy, penalty=self.multiplier.value * overshoot)
            buffer.rew[index] = reward
            overshoots.append(overshoot)
            flags = np.asarray(info["kept_flags"], dtype=bool)
            mask = Mask.from_keep_flags(np.split(flags, self.layout.offsets[1:]))
            self.evaluator.charge(mask.key(), mask, accuracy)  # counted here too: subprocess environments count in their copies
            if self.best is None or accuracy > self.best[0]:
                self.best = (accuracy, [list(k) for k in mask.kept])
            self.log_rows.append({
                "episode": len(self.log_rows), "iteration": self.iteration, "reward": reward,
                "search_top1": accuracy, "cost_ratio": float(info["cost_ratio"]),
                "agent_cost_ratio": float(info["agent_cost_ratio"]), "overshoot": overshoot,
                "repaired_channels": int(info["repaired_channels"]), "multiplier": self.multiplier.value,
                "best_search_top1": self.best[0],
            })
        return overshoots

    # -- persistence ------------------------------------------------------------------------------------------
    def _checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    def save_checkpoint(self) -> None:
        state = {
            "settings": self.settings.to_dict(), "seed": self.seed, "budget": str(self.budget), "network": self.network,
            "evaluations": self.evaluator.limit, "threads": torch.get_num_threads(),
            "iteration": self.iteration, "algorithm": self.algorithm.state_dict(),
            "reward": self.reward.state_dict(), "multiplier": self.multiplier.value,
            "budget_margin": self.margin.value, "best": list(self.best) if self.best else None, "log": self.log_rows,
            "iterations": self.iteration_rows,
            "mask_keys": sorted(self.evaluator.seen), "seconds": self.seconds,
            "timing": dict(self.timing), "rng": _rng_states(),
        }
        atomic_torch_save(state, self._checkpoint_path())
        atomic_write_text(_csv(self.log_rows, LOG_COLUMNS), self.out_dir / LOG_NAME)
        atomic_write_text(_csv(self.iteration_rows, ITERATION_COLUMNS), self.out_dir / ITERATIONS_NAME)

    def resume(self) -> None:
        """Continue from the checkpoint in out_dir if it belongs to this search (else start over, logged)."""
        path = self._checkpoint_path()
        if not path.exists():
            return
        state = load_checkpoint(path)
        if _settings_as_now(state.get("settings")) != self.settings.to_dict() or state.get("seed") != self.seed \
                or state.get("budget") != str(self.budget) or state.get("evaluations") != self.evaluator.limit:
            log.warning("%s belongs to a search with other settings: starting over", path)
            return
        if state.get("network") != self.network:
            log.warning("%s was saved by a search on another network (or on other weights of it): starting over",
                        path)
            return
        if state.get("threads") != torch.get_num_threads():  # float sums split by thread: other results
            log.warning("%s was saved by a search with %s torch threads, this one has %d: starting over, as it "
                        "would not end where either uninterrupted search does", path, state.get("threads"),
                        torch.get_num_threads())
            return
        self.algorithm.load_state_dict(state["algorithm"])
        self.reward.load_state_dict(state["reward"])
        self.multiplier.value = float(state["multiplier"])
        self.margin.value = float(state.get("budget_margin", 0.0))  # absent: saved before the margin existed
        self.envs.set_env_attr("budget_margin", self.margin.value)
        self.best = (float(state["best"][0]), state["best"][1]) if state["best"] else None
        self.iteration, self.log_rows = int(state["iteration"]), list(state["log"])
        self.iteration_rows = list(state["iterations"])
        self.evaluator.seen.update(state["mask_keys"])
        self.seconds, self.timing = float(state["seconds"]), dict(state["timing"])
        _set_rng_states(state["rng"])

    def _result(self) -> SearchResult:
        if self.best is None:
            raise GraphpruneError("the search ran no episode; raise search.evaluations")
        accuracy, kept = self.best
        mask = Mask(tuple(self.layout.sizes), tuple(tuple(k) for k in kept))
        t = self.timing
        total = t["collect"] + t["update"]
        record = {
            "stop_reason": self.stop_reason, "iterations": self.iteration,
            "episodes_per_second": len(self.log_rows) / max(total, 1e-9),
            "time_share": {  # of the search loop's wall time
                "evaluation": t["evaluation"] / total if total else 0.0,
                "environment_bookkeeping": (t["env_step"] - t["evaluation"]) / total if total else 0.0,
                "policy_and_updates": (total - t["env_step"]) / total if total else 0.0,
            },
            "multiplier": self.multiplier.value, "budget_margin": self.margin.value,
            "timing_seconds": dict(self.timing),
            "repaired_episodes": sum(1 for r in self.log_rows if r["repaired_channels"] > 0),
        }
        return SearchResult(mask, accuracy, len(self.log_rows), self.evaluator.masks_evaluated, self.seconds, record)


class MeasuredPPO(PPO):
    """Tianshou's PPO that also measures each update as CleanRL logs it (`last_stats`): mean policy and value
    loss, and over the whole batch after the update, the entropy, the approximate KL divergence from the
    policy that collected it ((r - 1) - log r, Schulman's estimator), the fraction of ratios outside the clip
    range, and the explained variance of the returns by the critic's values before the update."""

    last_stats: dict[str, float] = {}

    def __init__(self, *, target_kl: float | None = None, prepare_observations: Callable[[Batch], None] | None = None,
                 **ppo_arguments):
        super().__init__(**ppo_arguments)
        self.target_kl = target_kl
        self.prepare_observations = prepare_observations  # adds what no weight touches to a batch's observations

    def _preprocess_batch(self, batch, buffer, indices):
        if self.prepare_observations is not None:  # once per update, before the first forward pass reads them
            self.prepare_observations(batch.obs)
            self.prepare_observations(batch.obs_next)
        return super()._preprocess_batch(batch, buffer, indices)

    def _update_with_batch(self, batch, batch_size, repeat):
        """`repeat` epochs over the batch, stopped early once the approximate KL from the collecting policy
        passes `target_kl` (CleanRL's early stop), then the statistics of the update."""
        policy_losses, value_losses = [], []
        while len(policy_losses) < repeat:
            stats = super()._update_with_batch(batch, batch_size, 1)
            policy_losses.append(float(stats.actor_loss.mean))
            value_losses.append(float(stats.vf_loss.mean))
            if self.target_kl is not None and self._measure(batch)["approx_kl"] > self.target_kl:
                break
        self.last_stats = {"policy_loss": float(np.mean(policy_losses)), "value_loss": float(np.mean(value_losses)),
                           "update_epochs": len(policy_losses), **self._measure(batch)}
        return stats

    @torch.no_grad()
    def _measure(self, batch) -> dict[str, float]:
        log_probs, entropies = [], []
        for minibatch in batch.split(self.max_batchsize, shuffle=False, merge_last=True):
            dist = self.policy(minibatch).dist
            log_probs.append(dist.log_prob(minibatch.act).flatten())
            entropies.append(dist.entropy().flatten())
        log_ratio = torch.cat(log_probs) - batch.logp_old
        ratio = log_ratio.exp()
        returns, values = torch.as_tensor(batch.returns).flatten(), torch.as_tensor(batch.v_s).flatten()
        variance = float(returns.var())
        return {
            "entropy": float(torch.cat(entropies).mean()),
            "approx_kl": float(((ratio - 1) - log_ratio).mean()),
            "clip_fraction": float(((ratio - 1).abs() > self.eps_clip).float().mean()),
            "explained_variance": 1 - float((returns - values).var()) / variance if variance > 0 else float("nan"),
        }


# Fields added after checkpoints were first written, at the value that means "as before they existed" (their
# defaults have changed since).
ADDED_FIELDS = {"margin_lr": 0.0, "policy": {"budget_prior": False}}


def _settings_as_now(saved: dict | None) -> dict | None:
    """A checkpoint's settings with the fields added since it was written at the values the search it ran had
    (ADDED_FIELDS, else their defaults); None where they no longer parse (a removed field): then it cannot
    resume."""
    if not saved:
        return None
    saved = {**ADDED_FIELDS, **saved, "policy": {**ADDED_FIELDS["policy"], **saved.get("policy", {})}}
    try:
        return parse_settings(AgentSettings, saved, "checkpoint settings").to_dict()
    except GraphpruneError:
        return None


def _z_scores(values: np.ndarray) -> np.ndarray:
    """values standardised to mean 0 and std 1 (all zeros where they are all equal)."""
    spread = values.std()
    return (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)


def _rng_states() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": _numpy_state(), "python": list(random.getstate()[1]),
            "python_version": random.getstate()[0], "python_gauss": random.getstate()[2]}


def _numpy_state() -> dict:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"name": name, "keys": torch.as_tensor(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss)}


def _set_rng_states(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))


def _csv(rows: list[dict], columns: tuple[str, ...]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
