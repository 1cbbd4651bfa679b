"""Observation assembly: newest camera frames and joint states -> one time-consistent
`Observation`, or a counted reason why none can be made.

Rules: every required camera and every arm must have a message and the oldest must be
<= max_age_s old. Which joint sample goes with the frames is ``observation.joint_sample``:

- ``latest`` (default): the newest joint state, with the newest frames, as the training
  data pairs them (every sample holds a control tick's own joints with a frame near it:
  the last one rendered in demonstrations, the nearest in converted bags; the official
  ALOHA client reads the newest of each). The frames must be within max_skew_s of each
  other and the joint states no older than the newest frame by more than that (joints
  newer than the frames are expected: cameras are the slower stream); the observation is stamped at the newest message (the joint state),
  so a blocking chunk starts at its first action.
- ``nearest_frame``: a short history per arm is kept and the sample nearest to the newest
  required frame is used (proprio and images of the same instant); the spread of all
  stamps must be <= max_skew_s.

Optional cameras are included when they pass the same checks and dropped otherwise.
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
        self.joint_sample = config.joint_sample
        self._images: dict[str, _Stamped] = {}
        self._arms: dict[str, deque[_Stamped]] = {}
        self._privileged: dict[str, np.ndarray] = {}
        self._privileged_stamps: dict[str, int | None] = {}
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

    def set_privileged(self, key: str, value: np.ndarray, stamp_ns: int | None = None) -> None:
        self._privileged[key] = np.asarray(value, dtype=np.float64)
        self._privileged_stamps[key] = stamp_ns

    def clear(self, before_ns: int | None = None) -> None:
        """Forget what was received; with ``before_ns``, only what is stamped earlier (an
        episode start): messages of the new episode that arrived before its START event
        are kept (topics are not ordered against each other; dropping the first frame of
        an episode whose sim waits for the first chunk would stall it)."""
        if before_ns is None:
            self._images.clear()
            self._arms.clear()
            self._privileged.clear()
            self._privileged_stamps.clear()
            return
        for name in [n for n, s in self._images.items() if s.stamp_ns < before_ns]:
            del self._images[name]
        for name, history in list(self._arms.items()):
            kept = [s for s in history if s.stamp_ns >= before_ns]
            if kept:
                self._arms[name] = deque(kept, maxlen=self.JOINT_HISTORY)
            else:
                del self._arms[name]
        for key in [k for k, s in self._privileged_stamps.items() if s is None or s < before_ns]:
            del self._privileged[key], self._privileged_stamps[key]

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
            if reference_ns is None or self.joint_sample == "latest":
                chosen[arm.name] = max(history, key=lambda s: s.stamp_ns)
            else:
                chosen[arm.name] = min(history, key=lambda s: abs(s.stamp_ns - reference_ns))
            parts.append((f"arm:{arm.name}", chosen[arm.name].stamp_ns))

        required = {c.name for c in self.config.cameras if c.required} | {f"arm:{a.name}" for a in self.config.arms}
        newest = max(s for n, s in parts if n in required)
        skew_stamps = [s for _, s in parts]
        if self.joint_sample == "latest" and reference_ns is not None:
            # joints newer than the frames are the point (the camera is the slower stream);
            # joints older than the newest frame by more than max_skew_s are a stalled stream
            newest = reference_ns
            skew_stamps = [min(s, reference_ns) if n.startswith("arm:") else s for n, s in parts]
        # Optional cameras that do not fit the required ones are dropped, not fatal.
        keep = [n in required or (newest - s <= self.max_skew_ns and now_ns - s <= self.max_age_ns) for n, s in parts]
        parts = [p for p, k in zip(parts, keep) if k]
        skew_stamps = [s for s, k in zip(skew_stamps, keep) if k]
        stamps = [s for _, s in parts]
        if max(skew_stamps) - min(skew_stamps) > self.max_skew_ns:
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
