"""Observation assembly: newest camera frames and joint states -> one time-consistent
`Observation`, or a counted reason why none can be made.

Rules: every required camera and every arm must have a message; the spread of their
stamps (skew) must be <= max_skew_s and the oldest must be <= max_age_s old. Optional
cameras are included when they pass the same checks and dropped otherwise. Joint states
arrive faster than frames: a short history per arm is kept and the sample nearest to the
newest required frame is used, so proprio and images describe the same instant.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from cosmos_policy_ros.config import RobotConfig, joint_state_to_positions
from cosmos_policy_ros.types import Observation


@dataclass
class _Stamped:
    stamp_ns: int
    value: object


class ObservationAssembler:
    JOINT_HISTORY = 64  # samples per arm (1.3 s at 50 Hz)

    def __init__(self, config: RobotConfig, task: str = "", required_privileged: tuple[str, ...] = ()):
        self.config = config
        self.task = task
        self.required_privileged = tuple(required_privileged)
        self.max_skew_ns = int(config.max_skew_s * 1e9)
        self.max_age_ns = int(config.max_age_s * 1e9)
        self._images: dict[str, _Stamped] = {}
        self._arms: dict[str, deque[_Stamped]] = {}
        self._privileged: dict[str, np.ndarray] = {}
        self.refusals: Counter[str] = Counter()
        self.last_refusal = ""
        self.assembled = 0

    def add_image(self, camera: str, stamp_ns: int, image) -> None:
        """`image`: uint8 RGB [H, W, 3], or anything `assemble(decode=...)` turns into one
        (the node stores messages and decodes only the frames an observation uses)."""
        self._images[camera] = _Stamped(stamp_ns, image)

    def add_joint_state(self, arm_name: str, stamp_ns: int, names: list[str], positions) -> None:
        """Raises ValueError (naming the joint) when the message lacks a configured joint."""
        arm = next(a for a in self.config.arms if a.name == arm_name)
        if len(names) != len(positions):
            raise ValueError(f"{arm.joint_state_topic}: {len(names)} names but {len(positions)} positions")
        partial = np.full(self.config.dof, np.nan)
        joint_state_to_positions(arm, list(names), np.asarray(positions, dtype=np.float64), partial)
        self._arms.setdefault(arm_name, deque(maxlen=self.JOINT_HISTORY)).append(_Stamped(stamp_ns, partial))

    def set_privileged(self, key: str, value: np.ndarray) -> None:
        self._privileged[key] = np.asarray(value, dtype=np.float64)

    def clear(self) -> None:
        self._images.clear()
        self._arms.clear()
        self._privileged.clear()

    def assemble(self, now_ns: int, decode=None) -> Observation | None:
        """The observation at `now_ns`, or None (reason counted in `refusals`).

        decode: turns a stored image into uint8 RGB; a frame it rejects (ValueError) is
        dropped and counted as `bad_image:<camera>`."""
        parts: list[tuple[str, int]] = []
        for cam in self.config.cameras:
            if cam.name in self._images:
                parts.append((cam.name, self._images[cam.name].stamp_ns))
            elif cam.required:
                return self._refuse(f"missing_camera:{cam.name}")
        frame_stamps = [self._images[c.name].stamp_ns for c in self.config.cameras
                        if c.required and c.name in self._images]
        reference_ns = max(frame_stamps) if frame_stamps else None
        chosen: dict[str, _Stamped] = {}
        for arm in self.config.arms:
            history = self._arms.get(arm.name)
            if not history:
                return self._refuse(f"missing_joint_state:{arm.name}")
            if reference_ns is None:
                chosen[arm.name] = history[-1]
            else:
                chosen[arm.name] = min(history, key=lambda s: abs(s.stamp_ns - reference_ns))
            parts.append((f"arm:{arm.name}", chosen[arm.name].stamp_ns))

        required = {c.name for c in self.config.cameras if c.required} | {f"arm:{a.name}" for a in self.config.arms}
        newest = max(s for n, s in parts if n in required)
        # Optional cameras that do not fit the required ones are dropped, not fatal.
        parts = [(n, s) for n, s in parts if n in required or (newest - s <= self.max_skew_ns and now_ns - s <= self.max_age_ns)]
        stamps = [s for _, s in parts]
        if max(stamps) - min(stamps) > self.max_skew_ns:
            return self._refuse("skew", parts)
        if now_ns - min(stamps) > self.max_age_ns:
            return self._refuse("stale", parts, now_ns)

        for key in self.required_privileged:
            if key not in self._privileged:
                return self._refuse(f"missing_privileged:{key}")
        joints = np.full(self.config.dof, np.nan)
        for arm in self.config.arms:
            idx = list(arm.indices)
            joints[idx] = chosen[arm.name].value[idx]
        if not np.all(np.isfinite(joints)):
            return self._refuse("non_finite_joints")
        images = {n: self._images[n].value for n, _ in parts if not n.startswith("arm:")}
        if decode is not None:
            for name, image in images.items():
                try:
                    images[name] = decode(image)
                except ValueError as exc:
                    del self._images[name]  # never retried; the next frame replaces it
                    self._refuse(f"bad_image:{name}")
                    self.last_refusal = f"bad_image:{name}: {exc}"
                    return None
        self.assembled += 1
        return Observation(stamp_ns=max(stamps), images=images, joint_positions=joints,
                           task=self.task, privileged=dict(self._privileged))

    def _refuse(self, reason: str, parts=None, now_ns: int | None = None) -> None:
        self.refusals[reason] += 1
        if parts:
            newest = max(s for _, s in parts) if now_ns is None else now_ns
            ages = ", ".join(f"{n} {(newest - s) / 1e6:.0f} ms" for n, s in parts)
            self.last_refusal = f"{reason}: ages relative to {'now' if now_ns else 'newest'}: {ages}"
        else:
            self.last_refusal = reason
        return None
