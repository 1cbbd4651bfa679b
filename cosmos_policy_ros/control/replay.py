"""ReplayPolicy: replays a recorded ALOHA episode's actions, the way ALOHA's replay
script checks a robot (same joints, same timing) before any model is trusted on it.

Episode files use the ALOHA/ACT HDF5 layout: `/action` `[T, 14]`, `/observations/qpos`
`[T, 14]`, `/observations/images/<cam>` `[T, H, W, 3]`; the rate is the file's `fps`
attribute when present, else the control rate given.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cosmos_policy_ros.types import Observation, PolicyOutput


class EpisodeFileError(ValueError):
    pass


def read_episode_actions(path: str | Path) -> tuple[np.ndarray, float | None]:
    import h5py

    path = Path(path)
    if not path.exists():
        raise EpisodeFileError(f"episode file {path} does not exist")
    try:
        with h5py.File(path, "r") as f:
            if "action" not in f:
                raise EpisodeFileError(f"{path}: no /action dataset (ALOHA episode layout expected)")
            actions = np.asarray(f["action"], dtype=np.float64)
            fps = f.attrs.get("fps")
    except OSError as exc:
        raise EpisodeFileError(f"{path}: not a readable HDF5 file: {exc}") from exc
    if actions.ndim != 2 or actions.shape[0] == 0:
        raise EpisodeFileError(f"{path}: /action must be [T, dof] with T > 0, got {actions.shape}")
    if not np.all(np.isfinite(actions)):
        raise EpisodeFileError(f"{path}: /action contains NaN/inf")
    return actions, (float(fps) if fps is not None else None)


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
    def __init__(self, episode_path: str | Path, control_period_s: float, horizon: int = 50):
        actions, fps = read_episode_actions(episode_path)
        if fps is not None and abs(1.0 / fps - control_period_s) > 1e-6:
            raise EpisodeFileError(
                f"{episode_path}: recorded at {fps:g} Hz but the robot runs at {1 / control_period_s:g} Hz; "
                "replay at the recorded rate (set control_rate_hz) or resample the episode")
        super().__init__(actions, control_period_s, horizon)
