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
- ``PlanningSettings``: the robot YAML's ``planning:`` section, validated.

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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from cosmos_policy_ros.config import ConfigError, RobotConfig
from cosmos_policy_ros.types import Observation, PolicyOutput

AGGREGATIONS = ("majority_mean", "mean", "lcb", "success_vote")
DEPTH_AGGREGATIONS = ("use_last_value", "average")
# The official ensemble threshold: a value prediction above it counts as "predicts success".
DEFAULT_SUCCESS_THRESHOLD = 0.05


def default_planning_checkpoint() -> Path:
    """The tiny random planning checkpoint the package ships (V(s') layout; runs, plans nothing useful)."""
    from cosmos_policy_ros.model.checkpoint import shipped_checkpoint

    return shipped_checkpoint("tiny_cosmos_planning")


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
    """

    def __init__(self, model, num_future_samples: int = 3, num_value_samples: int = 5,
                 aggregation: str = "majority_mean", success_threshold: float = DEFAULT_SUCCESS_THRESHOLD,
                 seed: int = 0, max_batch_size: int | None = None) -> None:
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation {aggregation!r}: expected one of {AGGREGATIONS}")
        if num_future_samples < 1 or num_value_samples < 1:
            raise ValueError("num_future_samples and num_value_samples must be >= 1")
        self.model = model
        self.num_future_samples = int(num_future_samples)
        self.num_value_samples = int(num_value_samples)
        self.aggregation = aggregation
        self.success_threshold = float(success_threshold)
        self.seed = int(seed)
        self.max_batch_size = max_batch_size or None

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

    def score(self, observation, candidates: np.ndarray) -> PlanScores:
        start = time.perf_counter()
        chunks = np.asarray(candidates, dtype=np.float64)
        if chunks.ndim != 3 or chunks.shape[0] < 1:
            raise ValueError(f"candidates must be [N, horizon, dof] with N >= 1, got shape {chunks.shape}")
        self.model.max_batch_size = self.max_batch_size
        outcome = self.model.predict_outcomes(
            observation, chunks, num_future_samples=self.num_future_samples,
            num_value_samples=self.num_value_samples, seed=self.seed)
        values = aggregate_values(outcome.values, self.aggregation, self.success_threshold)
        return PlanScores(
            candidate_values=values, chosen_index=choose(values), member_values=outcome.values,
            future_joint_positions=outcome.future_joint_positions.mean(axis=1),
            compute_time_s=time.perf_counter() - start)

    def imagine(self, observation, chunk: np.ndarray) -> dict[str, np.ndarray]:
        """Predicted camera frames after ``chunk [horizon, dof]``: camera -> uint8 ``[H, W, 3]``.

        One world-model sample for this chunk, decoded by the VAE (a fresh draw, not one of
        the ensemble members ``score`` used; callers run it after the decision is out).
        """
        outcome = self.model.predict_outcomes(
            observation, np.asarray(chunk, np.float64)[None], num_future_samples=1, num_value_samples=1,
            seed=self.seed, decode_future_images=True)
        return {cam: frames[0, 0] for cam, frames in outcome.future_images.items()}


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


def stack_actions(candidates: list[PolicyOutput]) -> np.ndarray:
    """Candidate outputs -> ``[N, horizon, dof]``."""
    return np.stack([np.asarray(c.actions, dtype=np.float64) for c in candidates])


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
    scores = planner.score(observation, stack_actions(candidates))
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


# ---------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class PlanningSettings:
    """The robot YAML's ``planning:`` section (see config/aloha.yaml for the meaning of each key)."""

    enabled: bool = False
    num_candidates: int = 8
    deadline_s: float = 5.0
    request_topic: str = "planner/request"
    result_topic: str = "planner/result"
    decision_topic: str = "planning/decision"
    imagination_topic: str = "planner/imagination"
    publish_imagination: bool = True
    checkpoint: str = ""
    num_future_samples: int = 3
    num_value_samples: int = 5
    aggregation: str = "majority_mean"
    success_threshold: float = DEFAULT_SUCCESS_THRESHOLD
    search_depth: int = 1
    num_steps: dict[str, int] = field(default_factory=dict)
    max_batch_size: int = 0
    seed: int = 0
    compile: str = "auto"  # torch.compile the planning model's denoiser: auto (CUDA only) | true | false

    @classmethod
    def from_config(cls, config: RobotConfig) -> "PlanningSettings":
        section = config.section("planning")
        where = f"{config.path}: planning"
        defaults = cls()
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown}; known keys are {sorted(known)}")

        def typed(key: str, kind: type, check: Callable[[Any], bool] = lambda _: True, expected: str = ""):
            value = section.get(key, getattr(defaults, key))
            try:
                value = kind(value) if not (kind is bool and not isinstance(value, bool)) else None
            except (TypeError, ValueError):
                value = None
            if value is None or not check(value):
                raise ConfigError(f"{where}.{key}: expected {expected or kind.__name__}, got {section.get(key)!r}")
            return value

        steps = section.get("num_steps") or {}
        if not isinstance(steps, dict) or any(k not in ("world_model", "value") or not isinstance(v, int) or v < 1
                                              for k, v in steps.items()):
            raise ConfigError(f"{where}.num_steps: expected a mapping with world_model / value step counts >= 1 "
                              f"(empty: the checkpoint's), got {steps!r}")
        settings = cls(
            enabled=typed("enabled", bool),
            num_candidates=typed("num_candidates", int, lambda v: v >= 1, "an integer >= 1"),
            deadline_s=typed("deadline_s", float, lambda v: v > 0, "seconds > 0"),
            request_topic=typed("request_topic", str, bool, "a topic name"),
            result_topic=typed("result_topic", str, bool, "a topic name"),
            decision_topic=typed("decision_topic", str, bool, "a topic name"),
            imagination_topic=typed("imagination_topic", str, bool, "a topic prefix"),
            publish_imagination=typed("publish_imagination", bool),
            checkpoint=typed("checkpoint", str),
            num_future_samples=typed("num_future_samples", int, lambda v: v >= 1, "an integer >= 1"),
            num_value_samples=typed("num_value_samples", int, lambda v: v >= 1, "an integer >= 1"),
            aggregation=typed("aggregation", str, lambda v: v in AGGREGATIONS, f"one of {AGGREGATIONS}"),
            success_threshold=typed("success_threshold", float, lambda v: 0 <= v < 1, "a value in [0, 1)"),
            search_depth=typed("search_depth", int, lambda v: v == 1,
                               "1 (depth > 1 search is not implemented yet)"),
            num_steps=dict(steps),
            max_batch_size=typed("max_batch_size", int, lambda v: v >= 0, "an integer >= 0 (0: no limit)"),
            seed=typed("seed", int),
            compile=typed("compile", str, lambda v: v.lower() in ("auto", "true", "false"), "auto, true or false"),
        )
        return settings

    def checkpoint_path(self) -> Path:
        return Path(self.checkpoint) if self.checkpoint else default_planning_checkpoint()


def make_model_planner(config: RobotConfig, settings: PlanningSettings | None = None,
                       device: str | None = None) -> ModelPlanner:
    """Load the planning checkpoint named by ``planning.checkpoint`` and check it fits the robot."""
    from cosmos_policy_ros.model.cosmos_policy import CosmosPolicy

    settings = settings or PlanningSettings.from_config(config)
    from cosmos_policy_ros.model.hub import HubError, resolve_checkpoint

    try:
        folder = resolve_checkpoint(settings.checkpoint_path())
    except HubError as err:
        raise ConfigError(f"{config.path}: planning.checkpoint: {err}") from err
    if not folder.is_dir():
        raise ConfigError(f"{config.path}: planning.checkpoint: {str(folder)!r} is not a checkpoint folder "
                          "(convert one with `cosmos-policy-ros convert-checkpoint --planning`)")
    model = CosmosPolicy.from_pretrained(folder, device=device, seed=settings.seed, decode_future_images=False,
                                         compile=settings.compile)
    if tuple(model.config.joint_names) != tuple(config.joint_names):
        raise ConfigError(f"planning checkpoint {folder} was trained for joints {list(model.config.joint_names)}, "
                          f"{config.path} has {list(config.joint_names)}")
    if not (model.config.layout.has_kind("proprio", future=True) and model.config.layout.has_kind("value")):
        raise ConfigError(f"planning checkpoint {folder}: its latent layout has no future state / value slots")
    if settings.num_steps:
        model.config = replace(model.config, num_steps={**model.config.num_steps, **settings.num_steps})
    return ModelPlanner(model, settings.num_future_samples, settings.num_value_samples, settings.aggregation,
                        settings.success_threshold, settings.seed, settings.max_batch_size or None)
