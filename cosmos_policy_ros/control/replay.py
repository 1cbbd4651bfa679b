"""ReplayPolicy: replays a recorded ALOHA episode's actions, the way ALOHA's replay
script checks a robot (same joints, same timing) before any model is trusted on it.

Episode files are read with the package's one episode reader
(``cosmos_policy_ros.learning.episodes``): ``/action`` ``[T, dof]``; the recorded rate is
the file's ``control_rate_hz`` attribute (``fps`` for files from other ALOHA tools).
A file recorded at another rate than the robot's is refused, or resampled with the
package's one resampler when asked (``resample=True``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cosmos_policy_ros.learning.episodes import (
    EpisodeFormatError,
    read_episode,
    resample_to_rate,
)
from cosmos_policy_ros.types import Observation, PolicyOutput

#: Kept for callers that catch the replay error by its old name.
EpisodeFileError = EpisodeFormatError


def read_episode_actions(path: str | Path) -> tuple[np.ndarray, float | None]:
    """``(actions [T, dof], recorded rate in Hz or None)`` of an episode file."""
    episode = read_episode(path, need_qpos=False)
    return episode.action, episode.control_rate_hz


class TimeIndexedTrajectoryPolicy:
    """Returns `horizon` steps of a fixed trajectory, indexed by time since the episode's
    first observation (so a chunk computed late still lines up with the clock)."""

    def __init__(self, trajectory: np.ndarray, control_period_s: float, horizon: int = 50):
        self.trajectory = np.asarray(trajectory, dtype=np.float64)
        self.control_period_s = float(control_period_s)
        self.horizon = int(horizon)
        self.reset()

    def reset(self) -> None:
        self._start_ns: int | None = None

    def infer(self, observation: Observation) -> PolicyOutput:
        if observation.joint_positions.shape[0] != self.trajectory.shape[1]:
            raise ValueError(f"trajectory has {self.trajectory.shape[1]} joints, robot {observation.joint_positions.shape[0]}")
        if self._start_ns is None:
            self._start_ns = observation.stamp_ns
        step = int(round((observation.stamp_ns - self._start_ns) / (self.control_period_s * 1e9)))
        idx = np.clip(np.arange(step, step + self.horizon), 0, len(self.trajectory) - 1)
        return PolicyOutput(actions=self.trajectory[idx].copy())


class ReplayPolicy(TimeIndexedTrajectoryPolicy):
    def __init__(self, episode_path: str | Path, control_period_s: float, horizon: int = 50, resample: bool = False):
        actions, rate_hz = read_episode_actions(episode_path)
        robot_rate_hz = 1.0 / control_period_s
        if rate_hz is not None and abs(1.0 / rate_hz - control_period_s) > 1e-6:
            if not resample:
                raise EpisodeFileError(
                    f"{episode_path}: recorded at {rate_hz:g} Hz but the robot runs at {robot_rate_hz:g} Hz; "
                    "replay at the recorded rate (set control_rate_hz) or resample the episode (resample=True)")
            actions, _ = resample_to_rate(actions, rate_hz, robot_rate_hz)
        super().__init__(actions, control_period_s, horizon)
