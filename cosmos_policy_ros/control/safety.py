"""Per-tick command safety: joint position limits and a max step per control tick.

This module owns the last check before a joint position command leaves the executor:
``SafetyFilter.apply(target, last_command)`` never returns NaN/inf, never a position
outside ``[lower, upper]``, and never a change larger than ``max_step_per_tick`` from the
previous command. A target it cannot trust (non-finite, wrong shape) is refused and the
last command is held; it never guesses a partial command.

Units follow ``types.py``: radians for arm joints, normalized opening for grippers, in the
order of ``JointLimits.joint_names``. Nothing here imports ROS.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cosmos_policy_ros.config import ConfigError, RobotConfig

LIMIT_KEYS = ("lower", "upper", "max_step_per_tick")


class LimitsConfigError(ConfigError):
    """A limits section that cannot be used; the message names the field and what was expected."""


@dataclass(frozen=True)
class JointLimits:
    """Position range and max step per control tick for each joint, in ``joint_names`` order.

    lower, upper: ``[dof]`` position limits (rad, or normalized for grippers).
    max_step_per_tick: ``[dof]`` largest allowed change of the command between two ticks,
    > 0 (at 50 Hz, 0.02 rad/tick is 1 rad/s).
    """

    joint_names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    max_step_per_tick: np.ndarray

    def __post_init__(self) -> None:
        dof = len(self.joint_names)
        for name in LIMIT_KEYS:
            values = getattr(self, name)
            if values.shape != (dof,) or not np.all(np.isfinite(values)):
                raise LimitsConfigError(
                    f"limits.{name}: expected {dof} finite numbers (one per joint in "
                    f"joint_names), got shape {values.shape}"
                )
        bad = np.flatnonzero(self.lower > self.upper)
        if bad.size:
            raise LimitsConfigError(
                f"limits: lower > upper for joints {[self.joint_names[i] for i in bad]}"
            )
        bad = np.flatnonzero(self.max_step_per_tick <= 0)
        if bad.size:
            raise LimitsConfigError(
                f"limits.max_step_per_tick: expected > 0, got <= 0 for joints "
                f"{[self.joint_names[i] for i in bad]}"
            )

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    @classmethod
    def from_robot_config(cls, config: "RobotConfig") -> "JointLimits":
        """The robot YAML's ``limits`` section for its ``joint_names``."""
        return cls.from_config(dataclasses.asdict(config.limits), config.joint_names, f"{config.path}: limits")

    @classmethod
    def from_config(
        cls, limits: Mapping[str, object], joint_names: Sequence[str], source: str = "limits"
    ) -> "JointLimits":
        """Build from a config section ``{lower: [...], upper: [...], max_step_per_tick: [...]}``.

        Each value is a list with one number per joint (in ``joint_names`` order) or a single
        number used for every joint. ``source`` names the file/section in error messages,
        e.g. ``"config/aloha.yaml: limits"``.
        """
        names = tuple(str(n) for n in joint_names)
        if not names:
            raise LimitsConfigError(f"{source}: joint_names is empty")
        missing = [k for k in LIMIT_KEYS if k not in limits]
        if missing:
            raise LimitsConfigError(f"{source}: missing keys {missing}; expected {list(LIMIT_KEYS)}")
        arrays = {}
        for key in LIMIT_KEYS:
            try:
                values = np.asarray(limits[key], dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise LimitsConfigError(f"{source}.{key}: expected numbers, got {limits[key]!r}") from err
            if values.ndim == 0:
                values = np.full(len(names), float(values))
            if values.shape != (len(names),):
                raise LimitsConfigError(
                    f"{source}.{key}: expected one number or {len(names)} numbers (one per "
                    f"joint in joint_names), got {values.size}"
                )
            arrays[key] = values
        try:
            return cls(joint_names=names, **arrays)
        except LimitsConfigError as err:
            raise LimitsConfigError(f"{source}: {err}") from err


@dataclass(frozen=True)
class SafetyFlags:
    """What the filter did to one target.

    refused: why the target was replaced by the last command ('' when it was not):
    'shape' (not ``[dof]``) or 'nonfinite' (NaN/inf).
    clamped_joints / rate_limited_joints: how many joints were cut to the position limits /
    to the max step.
    """

    refused: str = ""
    clamped_joints: int = 0
    rate_limited_joints: int = 0

    @property
    def modified(self) -> bool:
        return bool(self.refused) or self.clamped_joints > 0 or self.rate_limited_joints > 0


class SafetyFilter:
    """Clamp to position limits, then limit the step from the last command.

    Order matters: clamping first and rate limiting second keeps the command inside the
    limits whenever the last command was inside them (the step is taken toward a point in
    the range). If the last command lies outside the range (only possible when it was
    initialized from a measured position outside it), the command moves toward the range
    by at most ``max_step_per_tick`` per tick instead of jumping into it.
    """

    def __init__(self, limits: JointLimits) -> None:
        self.limits = limits

    def apply(self, target: np.ndarray, last_command: np.ndarray) -> tuple[np.ndarray, SafetyFlags]:
        """Return ``(command [dof] float64, flags)``; ``last_command`` must be finite ``[dof]``."""
        lim = self.limits
        last = np.asarray(last_command, dtype=np.float64)
        if last.shape != (lim.dof,) or not np.all(np.isfinite(last)):
            raise ValueError(f"last_command must be {lim.dof} finite positions, got {last!r}")
        target = np.asarray(target)
        if target.shape != (lim.dof,):
            return last.copy(), SafetyFlags(refused="shape")
        try:
            target = target.astype(np.float64)
        except (TypeError, ValueError):
            return last.copy(), SafetyFlags(refused="nonfinite")
        if not np.all(np.isfinite(target)):
            return last.copy(), SafetyFlags(refused="nonfinite")

        clamped = np.clip(target, lim.lower, lim.upper)
        step = clamped - last
        limited_step = np.clip(step, -lim.max_step_per_tick, lim.max_step_per_tick)
        command = np.where(limited_step == step, clamped, last + limited_step)
        # last + step can round one ulp past a limit; pulling back toward the range only
        # shortens the step. Joints whose last command is outside the range approach it.
        inside = (last >= lim.lower) & (last <= lim.upper)
        command = np.where(inside, np.clip(command, lim.lower, lim.upper), command)
        # As measured downstream (|command - last|), last +- max_step can still round one
        # ulp over the bound: nudge those toward last.
        for _ in range(4):
            over = np.abs(command - last) > lim.max_step_per_tick
            if not over.any():
                break
            command = np.where(over, np.nextafter(command, last), command)
        return command, SafetyFlags(
            clamped_joints=int(np.count_nonzero(clamped != target)),
            rate_limited_joints=int(np.count_nonzero(limited_step != step)),
        )
