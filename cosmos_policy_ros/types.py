"""Plain data types shared by every layer: observations in, action chunks out.

Nothing here imports ROS or torch. Units and layouts are in the field names/docs:
joint positions are radians for arm joints and a normalized gripper opening in [0, 1]
(0 = closed, 1 = open), ordered as the robot config's ``joint_names``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Observation:
    """One time-consistent snapshot of the robot.

    images: camera name -> uint8 RGB array ``[height, width, 3]``.
    joint_positions: ``[dof]`` float64 in the config's joint order.
    stamp_ns: time of the observation (the newest message that made it), nanoseconds.
    task: the language instruction.
    """

    stamp_ns: int
    images: dict[str, np.ndarray]
    joint_positions: np.ndarray
    task: str = ""
    # Simulation-only ground truth some scripted policies use (e.g. "object_pose":
    # [7] xyz + wxyz). Never filled on a real robot.
    privileged: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class PolicyOutput:
    """What a policy returns for one observation.

    actions: ``[horizon, dof]`` joint position targets (same units as joint_positions).
    predicted_value: the model's V(s') estimate in [0, 1], when it has one.
    future_joint_positions: predicted proprio after the chunk, ``[dof]``.
    future_images: predicted camera frames after the chunk, name -> uint8 ``[H, W, 3]``.
    """

    actions: np.ndarray
    predicted_value: float | None = None
    future_joint_positions: np.ndarray | None = None
    future_images: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class ActionChunk:
    """A policy output placed in time: ``positions[k]`` is the target for
    ``stamp_ns + k * control_period_s`` (seconds -> ns)."""

    stamp_ns: int
    chunk_id: int
    joint_names: tuple[str, ...]
    positions: np.ndarray  # [horizon, dof]
    control_period_s: float
    predicted_value: float | None = None

    @property
    def horizon(self) -> int:
        return int(self.positions.shape[0])

    @property
    def dof(self) -> int:
        return int(self.positions.shape[1])

    @property
    def period_ns(self) -> int:
        return int(round(self.control_period_s * 1e9))

    def end_ns(self) -> int:
        """Time of the last target in the chunk."""
        return self.stamp_ns + (self.horizon - 1) * self.period_ns


@runtime_checkable
class Policy(Protocol):
    """The one interface every policy implements (scripted, replay, Cosmos torch/ONNX)."""

    def infer(self, observation: Observation) -> PolicyOutput: ...

    def reset(self) -> None: ...
