"""Which PlanRequests planner_node works on, and in which order, without ROS.

Owns:

- ``RequestRules`` / ``validate_request``: a PlanRequest (any object with its fields) ->
  ``PlanInputs`` for the planning model, or ``RequestRefused`` naming the field and the
  value that cannot be scored: candidate count (``planning.max_candidates``), joint names
  and horizon, finite joint and candidate positions within the robot YAML's ``limits``
  (plus ``LIMIT_TOLERANCE``; a measured gripper ``GRIPPER_MEASURED_TOLERANCE``), cameras, image encodings and sizes, task, deadline. Nothing
  here runs the model, so a refusal costs microseconds to milliseconds.
- ``NewestPerClient``: requests waiting for the model, at most one per client; a newer
  request from the same client replaces (supersedes) the waiting one, so the planner never
  works through a backlog of answers nobody waits for any more.
- ``deadline_passed`` and ``PlannerStats``: the expiry rule and the counts the node logs.
"""
from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from cosmos_policy_ros.control.images import ImageConversionError, image_message_to_rgb
from cosmos_policy_ros.control.safety import JointLimits
from cosmos_policy_ros.types import ActionChunk, Observation

# Positions may lie this far outside limits.lower/upper (rad, or normalized gripper
# opening) before a request is refused: the margin the executor allows a measurement
# (ChunkExecutor.MEASURED_MARGIN). Anything further is a fault, not noise.
LIMIT_TOLERANCE = 0.1
# A gripper's *measured* opening may lie further below its calibrated closed point: fingers
# closing on nothing, or squeezing, read past it (the sim has read -0.23 and -0.66). The
# plain policy scores such states, so the planner must too; candidates keep LIMIT_TOLERANCE.
GRIPPER_MEASURED_TOLERANCE = 1.0


class RequestRefused(ValueError):
    """A PlanRequest the planner cannot score. ``field`` names the offending field (the
    statistics key); the message names the field and the value."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field


@dataclass(frozen=True)
class RequestRules:
    """What the planning model accepts, in ``joint_names`` order (the model's)."""

    joint_names: tuple[str, ...]
    camera_names: tuple[str, ...]
    horizon: int
    lower: np.ndarray
    upper: np.ndarray
    max_candidates: int
    tasks: frozenset[str] | None = None  # None: any task (the model refuses unknown ones)
    default_task: str = ""  # what an empty task means
    tolerance: float = LIMIT_TOLERANCE
    gripper_joints: frozenset[str] = frozenset()  # measured with GRIPPER_MEASURED_TOLERANCE

    def tolerances(self, measured: bool) -> np.ndarray:
        """Per joint: how far outside the limits a value may lie (measured positions or commands)."""
        tol = np.full(len(self.joint_names), self.tolerance)
        if measured:
            tol[[n in self.gripper_joints for n in self.joint_names]] = max(self.tolerance, GRIPPER_MEASURED_TOLERANCE)
        return tol

    @classmethod
    def from_config(cls, config, max_candidates: int, joint_names, camera_names, horizon: int,
                    tasks=None, default_task: str = "") -> "RequestRules":
        """Limits from the robot YAML (``config``: RobotConfig), reordered to ``joint_names``."""
        limits = JointLimits.from_robot_config(config)
        names = tuple(joint_names)
        missing = [n for n in names if n not in limits.joint_names]
        if missing:
            raise ValueError(f"{config.path}: joints {missing} of the planning model have no limits "
                             f"(joint_names {list(limits.joint_names)})")
        order = [limits.joint_names.index(n) for n in names]
        return cls(joint_names=names, camera_names=tuple(camera_names), horizon=int(horizon),
                   lower=limits.lower[order], upper=limits.upper[order], max_candidates=int(max_candidates),
                   tasks=None if tasks is None else frozenset(tasks), default_task=default_task,
                   gripper_joints=config.gripper_joints)


@dataclass(frozen=True)
class PlanInputs:
    """A validated request. candidates: ``[N, horizon, dof]`` robot units, rules' joint order;
    first_chunk: candidate 0 as sent (stamp, period) for the imagination stamp."""

    observation: Observation
    candidates: np.ndarray
    first_chunk: ActionChunk
    action_latents: np.ndarray | None = None  # [N, C, h, w] the policy's raw action frames, if sent


def _outside(values: np.ndarray, rules: RequestRules, measured: bool = False) -> np.ndarray:
    """Mask of entries (last axis = joints) that are non-finite or outside the limits + tolerance."""
    tol = rules.tolerances(measured)
    with np.errstate(invalid="ignore"):
        low, high = rules.lower - tol, rules.upper + tol
        return ~np.isfinite(values) | (values < low) | (values > high)


def _describe(value: float, joint: int, rules: RequestRules, measured: bool = False) -> str:
    name = rules.joint_names[joint]
    if not np.isfinite(value):
        return f"{name} = {value} is not finite"
    return (f"{name} = {value:.6g} outside limits [{rules.lower[joint]:g}, {rules.upper[joint]:g}] "
            f"(tolerance {rules.tolerances(measured)[joint]:g})")


def validate_request(request, rules: RequestRules) -> PlanInputs:
    """Check every field the model would use, cheapest first; raise ``RequestRefused``
    for the first that does not fit. Images are decoded here (rgb8 without a copy)."""
    from cosmos_policy_ros.nodes.messages import (  # plain converters, no ROS imports
        duration_to_seconds,
        msg_to_chunk,
        stamp_to_ns,
    )

    deadline_s = duration_to_seconds(request.deadline)
    if not deadline_s > 0:
        raise RequestRefused("deadline", f"{deadline_s:g} s, must be > 0")

    n = len(request.candidates)
    if n == 0:
        raise RequestRefused("candidates", "none sent (need 1 or more)")
    if n > rules.max_candidates:
        raise RequestRefused("candidates", f"{n} sent, more than planning.max_candidates = {rules.max_candidates}")
    chunks = []
    for i, c in enumerate(request.candidates):
        try:
            chunks.append(msg_to_chunk(c))
        except ValueError as exc:
            raise RequestRefused(f"candidates[{i}]", str(exc)) from None
    names = chunks[0].joint_names
    for i, c in enumerate(chunks):
        if c.joint_names != names:
            raise RequestRefused(f"candidates[{i}].joint_names", f"{list(c.joint_names)} differ from candidates[0]'s")
    if sorted(names) != sorted(rules.joint_names):
        raise RequestRefused("candidates[0].joint_names",
                             f"{list(names)}, the planning model needs {list(rules.joint_names)}")
    for i, c in enumerate(chunks):
        if c.horizon != rules.horizon:
            raise RequestRefused(f"candidates[{i}].horizon",
                                 f"{c.horizon}, the planning model predicts after {rules.horizon} steps")
    order = [names.index(name) for name in rules.joint_names]

    joints = np.asarray(request.joint_positions, dtype=np.float64)
    if joints.shape != (len(names),):
        raise RequestRefused("joint_positions", f"{joints.size} entries, expected {len(names)}")
    joints = joints[order]
    bad = np.flatnonzero(_outside(joints, rules, measured=True))
    if bad.size:
        j = int(bad[0])
        raise RequestRefused("joint_positions", f"{_describe(joints[j], j, rules, measured=True)} "
                                                f"({bad.size} bad entries)")

    candidates = np.stack([c.positions[:, order] for c in chunks])  # [N, horizon, dof]
    bad = np.argwhere(_outside(candidates, rules))
    if bad.size:
        i, step, j = (int(v) for v in bad[0])
        raise RequestRefused(f"candidates[{i}].positions",
                             f"step {step}: {_describe(candidates[i, step, j], j, rules)} "
                             f"({len(bad)} bad entries in {len({int(v) for v in bad[:, 0]})} candidates)")

    cameras = list(request.camera_names)
    if len(cameras) != len(request.images):
        raise RequestRefused("camera_names", f"{len(cameras)} names for {len(request.images)} images")
    if len(set(cameras)) != len(cameras):
        raise RequestRefused("camera_names", f"{cameras} name a camera twice")
    missing = [cam for cam in rules.camera_names if cam not in cameras]
    if missing:
        raise RequestRefused("camera_names", f"{cameras} lack {missing} (the planning model uses "
                                             f"{list(rules.camera_names)})")
    images = {}
    for cam in rules.camera_names:  # cameras the model does not use are not decoded
        index = cameras.index(cam)
        try:
            images[cam] = image_message_to_rgb(request.images[index])
        except ImageConversionError as exc:
            raise RequestRefused(f"images[{index}] ({cam})", str(exc)) from None

    task = request.task or rules.default_task
    if rules.tasks is not None and task not in rules.tasks:
        raise RequestRefused("task", f"{request.task!r} has no text embedding in the planning checkpoint "
                                     f"(known: {sorted(rules.tasks)[:10]})")

    latents = None
    if len(request.action_latents) or len(request.action_latents_shape):
        shape = tuple(int(v) for v in request.action_latents_shape)
        values = np.asarray(request.action_latents, dtype=np.float32)
        if len(shape) != 4 or shape[0] != len(chunks) or int(np.prod(shape)) != values.size:
            raise RequestRefused("action_latents_shape", f"{list(shape)} for {values.size} values and "
                                                         f"{len(chunks)} candidates (expected [N, C, h, w])")
        if not np.all(np.isfinite(values)):
            raise RequestRefused("action_latents", f"{int(np.sum(~np.isfinite(values)))} non-finite values")
        latents = values.reshape(shape)

    observation = Observation(stamp_ns=stamp_to_ns(request.header.stamp), images=images,
                              joint_positions=joints, task=request.task)
    return PlanInputs(observation=observation, candidates=candidates, first_chunk=chunks[0],
                      action_latents=latents)


def deadline_passed(received_s: float, deadline_s: float, now_s: float) -> bool:
    """True when a request received at ``received_s`` (monotonic seconds on the planner) is
    past its deadline at ``now_s``: its client has executed candidate 0 already. Counted from
    reception, not the header stamp, so the two hosts' clocks need not agree."""
    return now_s - received_s > deadline_s


# ---------------------------------------------------------------------------- queue
@dataclass
class Waiting:
    """A validated request waiting for the model."""

    client: str
    request: Any
    inputs: Any
    received_s: float


class NewestPerClient:
    """Requests waiting for the model: at most one per client, served oldest client first.

    ``put`` returns the request it supersedes (the same client's waiting one), which the
    caller answers at once; ``take`` blocks until one waits (None once closed). The backlog
    is what waits, not counting the request being planned; ``max_backlog`` keeps its peak.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: dict[str, Waiting] = {}  # insertion order = arrival order of what waits
        self._closed = False
        self.max_backlog = 0

    def put(self, item: Waiting) -> Waiting | None:
        with self._cond:
            older = self._waiting.pop(item.client, None)
            self._waiting[item.client] = item
            self.max_backlog = max(self.max_backlog, len(self._waiting))
            self._cond.notify()
            return older

    def take(self, timeout_s: float | None = None) -> Waiting | None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._waiting or self._closed, timeout_s) or self._closed:
                return None
            client = next(iter(self._waiting))
            return self._waiting.pop(client)

    def __len__(self) -> int:
        with self._cond:
            return len(self._waiting)

    def close(self) -> list[Waiting]:
        """Stop ``take``; returns what was still waiting."""
        with self._cond:
            self._closed = True
            left = list(self._waiting.values())
            self._waiting.clear()
            self._cond.notify_all()
            return left


def client_key(frame_id: str, publisher_gid: Mapping | None) -> str:
    """Who sent a request: ``header.frame_id`` when the client sets one, else its publisher's
    DDS GID (one PlanningClient = one publisher), else one shared anonymous client."""
    if frame_id:
        return frame_id
    data = (publisher_gid or {}).get("data")
    return "gid:" + bytes(data).hex() if data is not None else ""


# ---------------------------------------------------------------------------- statistics
@dataclass
class PlannerStats:
    """Counts per outcome ("planned", "superseded", "expired", "failed", "refused <field>")."""

    counts: Counter = field(default_factory=Counter)
    compute_s: list = field(default_factory=list)  # last 50 planning times

    def refused(self, exc: RequestRefused) -> None:
        # candidates[3].positions -> candidates.positions: one key per field, not per index
        key = "".join(part.split("]", 1)[-1] if "]" in part else part for part in exc.field.split("["))
        self.counts[f"refused {key.split(' (')[0]}"] += 1

    def planned(self, compute_s: float) -> None:
        self.counts["planned"] += 1
        self.compute_s = (self.compute_s + [compute_s])[-50:]

    def summary(self, max_backlog: int) -> str:
        mean = f"{np.mean(self.compute_s):.2f} s" if self.compute_s else "-"
        return (f"requests {dict(sorted(self.counts.items())) or 'none yet'}, max backlog {max_backlog}, "
                f"compute time mean {mean}")
