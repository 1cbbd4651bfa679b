"""Best-of-N planning: score candidate action chunks with a planning model, pick one.

Owns, without ROS:

- ``Planner``: the one interface (``score(observation, candidates [N, horizon, dof]) ->
  PlanScores``); ``ModelPlanner`` implements it on a planning ``CosmosPolicy`` (world
  model p(s'|s, a) then value V(s'), all N candidates x ensemble members batched).
- ``aggregate_values``: how an ensemble of value predictions becomes one score per
  candidate ("majority_mean" as the official ALOHA deployment, "mean", "lcb",
  "success_vote").
- ``best_of_n``: sample N candidates with the policy (one batched call), score, choose.
- ``PendingRequests`` / ``decide``: the deadline and fallback rules the ROS planning
  client uses (wait at most ``deadline_s`` for the answer to one request id, else execute
  candidate 0, the policy's own sample), testable without ROS.
- ``PlanningSettings`` (defined in ``config``): the robot YAML's ``planning:`` section.

Facts carried over from the official deployment (cosmos-policy ``aloha/deploy.py``):
candidate i uses the policy's noise for seed + i, so candidate 0 is what the policy alone
would execute; each candidate's S future-state samples x V value samples are aggregated
together into one value; a candidate replaces candidate 0 only when its value is strictly
higher. Search depth > 1 (the official depth-3 variant: replace the current-state latents
by each predicted future state, sample the next chunk with the policy model, predict again,
aggregate the values over depth with "use_last_value" or "average") needs the world-model
latents from ``CosmosPolicy.predict_outcomes``, which it does not return yet; the
settings accept ``search_depth: 1`` only, and ``aggregate_over_depth`` is ready for it.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from cosmos_policy_ros.config import (
    DEFAULT_SUCCESS_THRESHOLD,
    ENSEMBLE_STEPS,
    ConfigError,
    PlanningSettings,
    RobotConfig,
)
from cosmos_policy_ros.config import (
    PLANNING_AGGREGATIONS as AGGREGATIONS,
)
from cosmos_policy_ros.types import Observation, PolicyOutput

DEPTH_AGGREGATIONS = ("use_last_value", "average")


def default_planning_checkpoint() -> Path:
    """The tiny random planning checkpoint the package ships (V(s') layout; runs, plans nothing useful)."""
    return PlanningSettings().checkpoint_path()


# ---------------------------------------------------------------------------- aggregation
def aggregate_values(values: np.ndarray, scheme: str = "majority_mean",
                     success_threshold: float = DEFAULT_SUCCESS_THRESHOLD) -> np.ndarray:
    """Ensemble value predictions ``[N, ...members]`` in [0, 1] -> one value per candidate ``[N]``.

    majority_mean: when at least half of the members predict success (value above
    ``success_threshold``), the mean of those members; otherwise 0. A minority of
    optimistic members cannot lift a candidate the majority expects to fail, and failing
    members do not drag down a candidate the majority expects to succeed.
    mean: plain mean. lcb: mean minus one (sample) standard deviation. success_vote: the
    fraction of members above the threshold. Results are clipped to [0, 1].
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim < 1 or v.shape[0] == 0:
        raise ValueError(f"values must be [N, ...members] with N >= 1, got shape {v.shape}")
    members = v.reshape(v.shape[0], -1)
    if scheme == "mean":
        out = members.mean(axis=1)
    elif scheme == "lcb":
        std = members.std(axis=1, ddof=1) if members.shape[1] > 1 else np.zeros(members.shape[0])
        out = members.mean(axis=1) - std
    elif scheme == "success_vote":
        out = (members > success_threshold).mean(axis=1)
    elif scheme == "majority_mean":
        success = members > success_threshold
        count = success.sum(axis=1)
        mean_success = np.where(success, members, 0.0).sum(axis=1) / np.maximum(count, 1)
        out = np.where(count / members.shape[1] >= 0.5, mean_success, 0.0)
    else:
        raise ValueError(f"unknown value aggregation {scheme!r}; expected one of {AGGREGATIONS}")
    return np.clip(out, 0.0, 1.0)


def aggregate_over_depth(values_by_depth: np.ndarray, scheme: str = "use_last_value") -> np.ndarray:
    """``[N, depth]`` aggregated values along a searched rollout -> ``[N]`` (for search_depth > 1)."""
    v = np.asarray(values_by_depth, dtype=np.float64)
    if scheme == "use_last_value":
        return v[:, -1]
    if scheme == "average":
        return v.mean(axis=1)
    raise ValueError(f"unknown depth aggregation {scheme!r}; expected one of {DEPTH_AGGREGATIONS}")


def choose(candidate_values: np.ndarray) -> int:
    """Index of the best candidate; ties go to the lowest index, so candidate 0 (the
    policy's own sample) is kept unless another is strictly better."""
    return int(np.argmax(np.asarray(candidate_values)))


# ---------------------------------------------------------------------------- planner
@dataclass(frozen=True)
class PlanScores:
    """A planner's verdict on N candidates.

    candidate_values: ``[N]`` aggregated value in [0, 1]. chosen_index: ``choose(values)``.
    member_values: ``[N, S, V]`` the raw ensemble (S future-state samples x V value samples).
    future_joint_positions: ``[N, dof]`` predicted joint positions after each chunk (ensemble mean).
    compute_time_s: wall time of the scoring, including observation encoding when done here.
    """

    candidate_values: np.ndarray
    chosen_index: int
    member_values: np.ndarray | None = None
    future_joint_positions: np.ndarray | None = None
    compute_time_s: float = 0.0


@runtime_checkable
class Planner(Protocol):
    """Scores candidate chunks ``[N, horizon, dof]`` (robot units) sampled from ``observation``."""

    def score(self, observation: Observation, candidates: np.ndarray) -> PlanScores: ...


class ModelPlanner:
    """``Planner`` on a planning-model ``CosmosPolicy`` (world model + V(s') value).

    All N x S world-model samples go through the denoiser in one batched sampler call and
    all N x S x V value samples in one more (``max_batch_size`` splits them without changing
    the noise, so a small value gives the sequential baseline with identical numbers).
    Ensemble members follow the official ALOHA schedule (``ensemble_steps`` "linspace":
    world-model members 1, 3, 5 steps, value members 1..5; seeds ``seed + candidate +
    member``); "full" runs every member at the checkpoint's step count.

    ``replicas``: more copies of the model, one per further device. The candidates are
    split into contiguous shards, one per replica, scored in threads; a shard starting at
    candidate c is given seed ``seed + c``, so every sample gets the seed and noise it gets
    on one device.
    """

    def __init__(self, model, num_future_samples: int = 3, num_value_samples: int = 5,
                 aggregation: str = "majority_mean", success_threshold: float = DEFAULT_SUCCESS_THRESHOLD,
                 seed: int | None = None, max_batch_size: int | None = None, ensemble_steps: str = "linspace",
                 replicas: Sequence[Any] = ()) -> None:
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation {aggregation!r}: expected one of {AGGREGATIONS}")
        if num_future_samples < 1 or num_value_samples < 1:
            raise ValueError("num_future_samples and num_value_samples must be >= 1")
        if ensemble_steps not in ENSEMBLE_STEPS:
            raise ValueError(f"ensemble_steps {ensemble_steps!r}: expected one of {ENSEMBLE_STEPS}")
        self.model = model
        self.replicas = [model, *replicas]
        self.num_future_samples = int(num_future_samples)
        self.num_value_samples = int(num_value_samples)
        self.aggregation = aggregation
        self.success_threshold = float(success_threshold)
        self.seed = int(getattr(model, "seed", 0) if seed is None else seed)
        self.max_batch_size = max_batch_size or None
        self.ensemble_steps = ensemble_steps
        self._pool = ThreadPoolExecutor(len(self.replicas), "planner-replica") if len(self.replicas) > 1 else None

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(self.model.config.joint_names)

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(self.model.config.camera_names)

    @property
    def chunk_size(self) -> int:
        return int(self.model.config.chunk_size)

    def encode(self, observation: Observation):
        """Encode once; ``score`` and ``imagine`` accept the result instead of the observation."""
        return self.model.encode_observation(observation)

    def score(self, observation, candidates: np.ndarray, action_latents=None) -> PlanScores:
        """Score ``candidates [N, horizon, dof]``; ``action_latents [N, C, h, w]`` are the policy's
        raw action frames (``CosmosPolicyOutput.action_latent``), which the official world model
        is conditioned on; without them the chunks are tiled into the action frame."""
        start = time.perf_counter()
        chunks = np.asarray(candidates, dtype=np.float64)
        if chunks.ndim != 3 or chunks.shape[0] < 1:
            raise ValueError(f"candidates must be [N, horizon, dof] with N >= 1, got shape {chunks.shape}")
        if action_latents is not None and len(action_latents) != chunks.shape[0]:
            raise ValueError(f"action_latents has {len(action_latents)} frames for {chunks.shape[0]} candidates")
        shards = _shards(chunks.shape[0], len(self.replicas))
        if self._pool is None or len(shards) == 1:
            outcome = self._predict(self.model, observation, chunks, action_latents, 0)
            values_by_member, future = outcome.values, outcome.future_joint_positions
        else:
            if not hasattr(observation, "latents"):
                observation = self.model.encode_observation(observation)  # encode once, not per replica
            jobs = [self._pool.submit(self._predict, replica, observation, chunks[lo:hi],
                                      None if action_latents is None else action_latents[lo:hi], lo)
                    for replica, (lo, hi) in zip(self.replicas, shards)]
            outcomes = [job.result() for job in jobs]
            values_by_member = np.concatenate([o.values for o in outcomes])
            future = np.concatenate([o.future_joint_positions for o in outcomes])
        values = aggregate_values(values_by_member, self.aggregation, self.success_threshold)
        return PlanScores(
            candidate_values=values, chosen_index=choose(values), member_values=values_by_member,
            future_joint_positions=future.mean(axis=1), compute_time_s=time.perf_counter() - start)

    def _predict(self, replica, observation, chunks: np.ndarray, action_latents, first_candidate: int):
        if hasattr(observation, "latents") and replica is not self.model:
            observation = observation.to(replica.device)
        replica.max_batch_size = self.max_batch_size
        return replica.predict_outcomes(
            observation, chunks, num_future_samples=self.num_future_samples,
            num_value_samples=self.num_value_samples, seed=self.seed + first_candidate,
            action_latents=action_latents, ensemble_steps=self.ensemble_steps)

    def imagine(self, observation, chunk: np.ndarray) -> dict[str, np.ndarray]:
        """Predicted camera frames after ``chunk [horizon, dof]``: camera -> uint8 ``[H, W, 3]``.

        One world-model sample for this chunk at the full step count, decoded by the VAE (a
        fresh draw, not one of the ensemble members ``score`` used; callers run it after the
        decision is out).
        """
        outcome = self.model.predict_outcomes(
            observation, np.asarray(chunk, np.float64)[None], num_future_samples=1, num_value_samples=1,
            seed=self.seed, decode_future_images=True)
        return {cam: frames[0, 0] for cam, frames in outcome.future_images.items()}


def _shards(count: int, parts: int) -> list[tuple[int, int]]:
    """Split ``count`` candidates into at most ``parts`` contiguous, nearly equal ranges."""
    parts = max(1, min(parts, count))
    bounds = [round(i * count / parts) for i in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


# ---------------------------------------------------------------------------- best-of-N
@dataclass(frozen=True)
class PlanDecision:
    """What was executed and why.

    output: the chosen candidate (its ``predicted_value`` is the planner's aggregated value
        when the planner answered). chosen_index: index into the candidates.
    candidate_values: ``[N]`` the planner's values, None when it did not answer.
    fallback: "" when the planner chose, else why candidate 0 was executed.
    """

    output: PolicyOutput
    chosen_index: int
    candidate_values: np.ndarray | None = None
    fallback: str = ""


def sample_candidates(policy, observation: Observation, num_candidates: int, seed: int) -> list[PolicyOutput]:
    """N candidates from one batched policy call (candidate 0 = the policy's own sample for ``seed``)."""
    sampler = getattr(policy, "sample_candidates", None)
    if sampler is None:
        raise TypeError(f"{type(policy).__name__} cannot sample candidates; best-of-N needs a "
                        "policy with sample_candidates(observation, num_candidates, seed) (policy type cosmos)")
    candidates = sampler(observation, num_candidates=num_candidates, seed=seed)
    if len(candidates) != num_candidates:
        raise ValueError(f"policy returned {len(candidates)} candidates, asked for {num_candidates}")
    return candidates


def clamp_candidates(candidates: list[PolicyOutput], lower: np.ndarray, upper: np.ndarray) -> list[PolicyOutput]:
    """Candidates with their positions clamped to the joint limits, as the executor would
    run them; a policy that overshoots a gripper's [0, 1] a little would otherwise have
    every request refused by the planner's limit check (and never be planned)."""
    clamped = []
    for candidate in candidates:
        actions = np.asarray(candidate.actions, dtype=np.float64)
        inside = np.clip(actions, lower, upper)
        clamped.append(candidate if np.array_equal(inside, actions) else replace(candidate, actions=inside))
    return clamped


def perturb_candidates(candidates: list[PolicyOutput], std_rad: float, noisy_joints: np.ndarray,
                       rng: np.random.Generator) -> list[PolicyOutput]:
    """Candidates 1.. moved by one Gaussian offset per joint where ``noisy_joints`` (std
    ``std_rad``, the same for every step of the chunk: a consistently shifted reach or grasp);
    candidate 0, the policy's own sample, is kept. A moved candidate loses its action latent,
    so the planner scores it from its chunk. Clamp to the limits afterwards."""
    if not std_rad > 0 or len(candidates) < 2:
        return list(candidates)
    noisy = np.asarray(noisy_joints, dtype=bool)
    moved = [candidates[0]]
    for candidate in candidates[1:]:
        actions = np.asarray(candidate.actions, dtype=np.float64)
        offset = np.where(noisy, rng.normal(0.0, std_rad, actions.shape[-1]), 0.0)
        changes = {"actions": actions + offset}
        if hasattr(candidate, "action_latent"):
            changes["action_latent"] = None
        moved.append(replace(candidate, **changes))
    return moved


def stack_actions(candidates: list[PolicyOutput]) -> np.ndarray:
    """Candidate outputs -> ``[N, horizon, dof]``."""
    return np.stack([np.asarray(c.actions, dtype=np.float64) for c in candidates])


def action_latents(candidates: list[PolicyOutput]):
    """``[N, C, h, w]`` raw action latent frames when every candidate carries one, else None."""
    frames = [getattr(c, "action_latent", None) for c in candidates]
    if any(f is None for f in frames):
        return None
    import torch

    return torch.stack([torch.as_tensor(f) for f in frames])


def decide(candidates: list[PolicyOutput], candidate_values=None, chosen_index: int | None = None,
           future_joint_positions: np.ndarray | None = None, fallback: str = "") -> PlanDecision:
    """Apply a planner's answer to the candidates, or fall back to candidate 0.

    A missing answer (``candidate_values`` None), a non-empty ``fallback`` reason, or an
    answer that does not fit the candidates (wrong length, index out of range) executes
    candidate 0 unchanged.
    """
    n = len(candidates)
    if not fallback and candidate_values is None:
        fallback = "no answer"
    if not fallback:
        values = np.asarray(candidate_values, dtype=np.float64)
        if values.shape != (n,):
            fallback = f"answer has {values.size} values for {n} candidates"
        elif chosen_index is None or not 0 <= int(chosen_index) < n:
            fallback = f"chosen index {chosen_index} out of range for {n} candidates"
    if fallback:
        return PlanDecision(output=candidates[0], chosen_index=0, candidate_values=None, fallback=fallback)
    index = int(chosen_index)
    chosen = candidates[index]
    future = chosen.future_joint_positions
    if future_joint_positions is not None and np.size(future_joint_positions):
        future = np.asarray(future_joint_positions, dtype=np.float64)
    output = replace(chosen, predicted_value=float(values[index]), future_joint_positions=future)
    return PlanDecision(output=output, chosen_index=index, candidate_values=values)


def best_of_n(policy, planner: Planner, observation: Observation, num_candidates: int,
              seed: int = 0) -> PlanDecision:
    """Sample ``num_candidates`` chunks with ``policy``, score them with ``planner``, pick the best."""
    candidates = sample_candidates(policy, observation, num_candidates, seed)
    latents = action_latents(candidates)
    if latents is None:
        scores = planner.score(observation, stack_actions(candidates))
    else:
        scores = planner.score(observation, stack_actions(candidates), action_latents=latents)
    future = None
    if scores.future_joint_positions is not None:
        future = scores.future_joint_positions[scores.chosen_index]
    return decide(candidates, scores.candidate_values, scores.chosen_index, future)


# ---------------------------------------------------------------------------- deadline
class PendingRequests:
    """Answers matched to requests by id, each waited for at most its deadline.

    ``open(id)`` before sending, ``deliver(id, answer)`` from any thread when an answer
    arrives, ``wait(id, deadline_s)`` returns the answer or None at the deadline. Answers
    for ids nobody waits for (late, duplicate, from another client) are dropped and counted.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[int, threading.Event] = {}
        self._answers: dict[int, Any] = {}
        self.late_answers = 0

    def open(self, request_id: int) -> None:
        with self._lock:
            self._events[request_id] = threading.Event()

    def deliver(self, request_id: int, answer: Any) -> bool:
        with self._lock:
            event = self._events.get(request_id)
            if event is None or event.is_set():
                self.late_answers += 1
                return False
            self._answers[request_id] = answer
            event.set()
        return True

    def wait(self, request_id: int, deadline_s: float, since: float | None = None) -> Any | None:
        """The answer, or None once ``deadline_s`` has passed since ``since`` (time.monotonic(); default now)."""
        with self._lock:
            event = self._events[request_id]
        remaining = deadline_s - (time.monotonic() - since) if since is not None else deadline_s
        event.wait(max(0.0, remaining))
        with self._lock:
            self._events.pop(request_id, None)
            return self._answers.pop(request_id, None)

    def cancel(self, request_id: int) -> None:
        with self._lock:
            self._events.pop(request_id, None)
            self._answers.pop(request_id, None)


@dataclass
class PlanningStats:
    """Counters for the planning log line and tests."""

    requests: int = 0
    planned: int = 0
    fallbacks: Counter = field(default_factory=Counter)
    chosen: Counter = field(default_factory=Counter)
    last_wait_s: float = 0.0
    max_fallback_wait_s: float = 0.0
    planner_time_s: list[float] = field(default_factory=list)
    last_values: np.ndarray | None = None

    def record(self, decision: PlanDecision, wait_s: float, planner_time_s: float | None = None) -> None:
        self.requests += 1
        self.last_wait_s = wait_s
        if decision.fallback:
            self.fallbacks[_reason_key(decision.fallback)] += 1
            self.max_fallback_wait_s = max(self.max_fallback_wait_s, wait_s)
        else:
            self.planned += 1
            self.chosen[decision.chosen_index] += 1
            self.last_values = decision.candidate_values
            if planner_time_s is not None:
                self.planner_time_s = (self.planner_time_s + [planner_time_s])[-50:]

    def summary(self) -> str:
        mean_t = f"{np.mean(self.planner_time_s):.2f} s" if self.planner_time_s else "-"
        values = "-" if self.last_values is None else "[" + ", ".join(f"{v:.2f}" for v in self.last_values) + "]"
        return (f"planning: requests {self.requests}, planned {self.planned}, "
                f"fallbacks {dict(self.fallbacks) or 'none'} (max wait {self.max_fallback_wait_s:.2f} s), "
                f"chosen {dict(sorted(self.chosen.items())) or '-'}, planner time {mean_t}, last values {values}")


def _reason_key(reason: str) -> str:
    return reason.split(":")[0].split(" (")[0]


def make_model_planner(config: RobotConfig, settings: PlanningSettings | None = None,
                       device: str | None = None) -> ModelPlanner:
    """Load the planning checkpoint named by ``planning.checkpoint`` and check it fits the robot;
    one replica per entry of ``planning.devices`` (``device`` or the default device when empty)."""
    from cosmos_policy_ros.model.cosmos_policy import CosmosPolicy

    settings = settings or config.planning
    from cosmos_policy_ros.model.hub import HubError, resolve_checkpoint

    try:
        folder = resolve_checkpoint(settings.checkpoint_path())
    except HubError as err:
        raise ConfigError(f"{config.path}: planning.checkpoint: {err}") from err
    if not folder.is_dir():
        raise ConfigError(f"{config.path}: planning.checkpoint: {str(folder)!r} is not a checkpoint folder "
                          "(convert one with `cosmos-policy-ros convert-checkpoint --planning`)")
    devices = list(settings.devices) or [device]
    _check_devices_exist(config, devices)
    models = [CosmosPolicy.from_pretrained(folder, device=d, seed=settings.seed, decode_future_images=False,
                                           compile=settings.compile)
              for d in devices]
    model = models[0]
    if tuple(model.config.joint_names) != tuple(config.joint_names):
        raise ConfigError(f"planning checkpoint {folder} was trained for joints {list(model.config.joint_names)}, "
                          f"{config.path} has {list(config.joint_names)}")
    if not (model.config.layout.has_kind("proprio", future=True) and model.config.layout.has_kind("value")):
        raise ConfigError(f"planning checkpoint {folder}: its latent layout has no future state / value slots")
    if settings.num_steps:
        for replica in models:
            replica.config = replace(replica.config, num_steps={**replica.config.num_steps, **settings.num_steps})
    return ModelPlanner(model, settings.num_future_samples, settings.num_value_samples, settings.aggregation,
                        settings.success_threshold, model.seed, settings.max_batch_size or None,
                        settings.ensemble_steps, replicas=models[1:])


def _check_devices_exist(config: RobotConfig, devices: list[str | None]) -> None:
    import torch

    for name in devices:
        if name is None or not name.startswith("cuda"):
            continue
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"{config.path}: planning.devices: {name!r} does not exist "
                              f"(this machine has {torch.cuda.device_count()} CUDA devices)")
