"""The whole robot YAML: arms, joints, grippers, cameras, and the typed sections; loading,
overrides and cross-section checks."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cosmos_policy_ros.config.errors import ConfigError, resolve_config_path
from cosmos_policy_ros.config.sections import (
    EXECUTED_COMMAND_TOPIC,
    GRIPPER_UNITS,
    ExecutionSettings,
    LimitsSettings,
    ObservationSettings,
    OutputSettings,
    PlanningSettings,
    CollectionSettings,
    PolicySettings,
    RecordingSettings,
    SimSettings,
)
from cosmos_policy_ros.config.validation import _coerce, check_keys, parse_section

TOP_LEVEL_KEYS = ("robot", "control_rate_hz", "joint_names", "arms", "cameras", "camera_transport",
                  "observation", "limits", "execution", "output", "policy", "planning", "sim", "recording",
                  "collection", "action_topic")
ARM_KEYS = ("joint_state_topic", "command_namespace", "joints", "gripper")
CAMERA_KEYS = ("topic", "required")



# Follower gripper calibrations, selected with `arms.<arm>.gripper.preset` in the robot YAML
# (fields given beside the preset override it). Normalized opening: 0 closed, 1 open.
GRIPPER_PRESETS: dict[str, dict[str, float]] = {
    # Trossen's ROS 2 `aloha` (aloha/constants.py, branch main): FOLLOWER_GRIPPER_POSITION_*
    # (left_finger, metres) and FOLLOWER_GRIPPER_JOINT_* (gripper motor, radians).
    "aloha_ros2": {"finger_closed_m": 0.0440, "finger_open_m": 0.0579,
                   "motor_closed_rad": 0.6197, "motor_open_rad": 1.6214},
    # The original ROS 1 ALOHA (PUPPET_GRIPPER_POSITION_* / PUPPET_GRIPPER_JOINT_*): for
    # checkpoints trained on data recorded with it, whose normalized gripper used this range.
    "aloha_ros1": {"finger_closed_m": 0.01844, "finger_open_m": 0.05800,
                   "motor_closed_rad": -0.6213, "motor_open_rad": 1.4910},
}


@dataclass(frozen=True)
class GripperConfig:
    """One gripper's calibration and the package's only conversion between the normalized
    opening (joint_names vectors, datasets, checkpoints) and the robot's units: finger
    travel in metres (JointState) and motor position in radians (Interbotix commands).
    Every method takes a float or a numpy array."""

    joint: str
    state_name: str
    finger_closed_m: float
    finger_open_m: float
    motor_closed_rad: float | None = None  # None: no motor range (motor_rad unit refused)
    motor_open_rad: float | None = None

    @property
    def has_motor_range(self) -> bool:
        return self.motor_closed_rad is not None and self.motor_open_rad is not None

    def normalize_finger(self, finger_m):
        return (finger_m - self.finger_closed_m) / (self.finger_open_m - self.finger_closed_m)

    def normalize_finger_velocity(self, finger_m_per_s):
        return finger_m_per_s / (self.finger_open_m - self.finger_closed_m)

    def finger_from_normalized(self, opening):
        return self.finger_closed_m + opening * (self.finger_open_m - self.finger_closed_m)

    def normalize_motor(self, motor_rad):
        self._require_motor_range()
        return (motor_rad - self.motor_closed_rad) / (self.motor_open_rad - self.motor_closed_rad)

    def motor_from_normalized(self, opening):
        self._require_motor_range()
        return self.motor_closed_rad + opening * (self.motor_open_rad - self.motor_closed_rad)

    def from_normalized(self, opening, unit: str):
        """Normalized opening -> `unit` (one of GRIPPER_UNITS)."""
        if unit == "normalized":
            return opening
        if unit == "finger_m":
            return self.finger_from_normalized(opening)
        if unit == "motor_rad":
            return self.motor_from_normalized(opening)
        raise ValueError(f"gripper unit: expected one of {GRIPPER_UNITS}, got {unit!r}")

    def to_normalized(self, value, unit: str):
        """`unit` (one of GRIPPER_UNITS) -> normalized opening."""
        if unit == "normalized":
            return value
        if unit == "finger_m":
            return self.normalize_finger(value)
        if unit == "motor_rad":
            return self.normalize_motor(value)
        raise ValueError(f"gripper unit: expected one of {GRIPPER_UNITS}, got {unit!r}")

    def _require_motor_range(self) -> None:
        if not self.has_motor_range:
            raise ValueError(f"gripper {self.joint}: no motor range (set motor_closed_rad and "
                             "motor_open_rad, or a preset, in the robot config)")


_GRIPPER_KEYS = ("joint", "state_name", "preset", "finger_closed_m", "finger_open_m",
                 "motor_closed_rad", "motor_open_rad")


def _parse_gripper(g: dict, where: str) -> GripperConfig:
    if not isinstance(g, dict):
        raise ConfigError(f"{where}: expected a mapping with {list(_GRIPPER_KEYS)}")
    check_keys(g, _GRIPPER_KEYS, where)
    values: dict[str, float] = {}
    preset = g.get("preset")
    if preset is not None:
        if preset not in GRIPPER_PRESETS:
            raise ConfigError(f"{where}.preset: expected one of {sorted(GRIPPER_PRESETS)}, got {preset!r}")
        values.update(GRIPPER_PRESETS[preset])
    for key, what in (("finger_closed_m", "metres"), ("finger_open_m", "metres"),
                      ("motor_closed_rad", "radians"), ("motor_open_rad", "radians")):
        if key in g:
            values[key] = float(_require(g, key, where, (int, float), what))
    for key in ("finger_closed_m", "finger_open_m"):
        if key not in values:
            raise ConfigError(f"{where}: missing field {key!r} (metres; or a preset: {sorted(GRIPPER_PRESETS)})")
    if ("motor_closed_rad" in values) != ("motor_open_rad" in values):
        raise ConfigError(f"{where}: give both motor_closed_rad and motor_open_rad, or neither")
    gripper = GripperConfig(
        joint=str(_require(g, "joint", where, str, "a joint_names entry")),
        state_name=str(_require(g, "state_name", where, str, "the JointState name of the finger")),
        **values,
    )
    if gripper.finger_open_m == gripper.finger_closed_m:
        raise ConfigError(f"{where}: finger_open_m must differ from finger_closed_m")
    if gripper.has_motor_range and gripper.motor_open_rad == gripper.motor_closed_rad:
        raise ConfigError(f"{where}: motor_open_rad must differ from motor_closed_rad")
    return gripper


@dataclass(frozen=True)
class ArmConfig:
    name: str
    joint_state_topic: str
    command_namespace: str
    joints: dict[str, str]  # joint_names entry -> JointState name (arm joints, in order)
    gripper: GripperConfig | None
    indices: tuple[int, ...]  # positions of this arm's joints (arm joints, then gripper) in joint_names

    @property
    def command_joint_names(self) -> list[str]:
        """This arm's joints in command order, with the controller's names."""
        names = list(self.joints.values())
        if self.gripper is not None:
            names.append("gripper")
        return names


@dataclass(frozen=True)
class CameraConfig:
    name: str
    topic: str
    required: bool


@dataclass(frozen=True)
class RobotConfig:
    """Typed view of the whole robot YAML; `raw` is the mapping it was parsed from."""

    path: Path
    robot: str
    control_rate_hz: float
    joint_names: tuple[str, ...]
    arms: tuple[ArmConfig, ...]
    cameras: tuple[CameraConfig, ...]
    camera_transport: str
    observation: ObservationSettings
    limits: LimitsSettings
    execution: ExecutionSettings
    output: OutputSettings
    policy: PolicySettings
    planning: PlanningSettings
    sim: SimSettings
    recording: RecordingSettings
    collection: CollectionSettings
    action_topic: str
    raw: dict[str, Any]

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    @property
    def gripper_joints(self) -> frozenset[str]:
        """The joint_names entries that are grippers (a normalized opening, not radians)."""
        return frozenset(arm.gripper.joint for arm in self.arms if arm.gripper is not None)

    @property
    def control_period_s(self) -> float:
        return 1.0 / self.control_rate_hz

    def data_signature(self) -> dict[str, Any]:
        """What recorded data means under this config: the robot, the joint order and each
        gripper's finger range (the normalized opening depends on it). The recorder stores
        it in every bag; the converter refuses bags whose signature differs from its own."""
        grippers = {arm.gripper.joint: [arm.gripper.finger_closed_m, arm.gripper.finger_open_m]
                    for arm in self.arms if arm.gripper is not None}
        return {"robot": self.robot, "joint_names": list(self.joint_names), "gripper_finger_m": grippers}

    @property
    def max_skew_s(self) -> float:
        return self.observation.max_skew_s

    @property
    def max_age_s(self) -> float:
        return self.observation.max_age_s

    @property
    def joint_sample(self) -> str:
        return self.observation.joint_sample


def _require(mapping: dict, key: str, where: str, kind: type | tuple[type, ...], what: str):
    if key not in mapping:
        raise ConfigError(f"{where}: missing field {key!r} ({what})")
    value = mapping[key]
    if not isinstance(value, kind):
        raise ConfigError(f"{where}.{key}: expected {what}, got {value!r}")
    return value


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> RobotConfig:
    """Load and validate a robot YAML. `overrides` maps 'section.key' -> value."""
    path = resolve_config_path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if not key:
            raw[section] = value
        else:
            raw.setdefault(section, {})
            raw[section][key] = value
    return parse_config(raw, path)


def parse_config(raw: dict[str, Any], path: Path | str = "<config>") -> RobotConfig:
    where = str(path)
    check_keys(raw, TOP_LEVEL_KEYS, where)
    joint_names = _require(raw, "joint_names", where, list, "a list of joint names")
    joint_names = tuple(str(n) for n in joint_names)
    if len(set(joint_names)) != len(joint_names):
        raise ConfigError(f"{where}.joint_names: names must be unique, got {list(joint_names)}")
    rate = float(_require(raw, "control_rate_hz", where, (int, float), "a rate in Hz"))
    if rate <= 0:
        raise ConfigError(f"{where}.control_rate_hz: expected > 0, got {rate}")

    arms_raw = _require(raw, "arms", where, dict, "a mapping arm name -> arm section")
    arms = []
    covered: list[str] = []
    for arm_name, arm in arms_raw.items():
        at = f"{where}.arms.{arm_name}"
        if not isinstance(arm, dict):
            raise ConfigError(f"{at}: expected a mapping")
        check_keys(arm, ARM_KEYS, at)
        joints = _require(arm, "joints", at, dict, "a mapping joint_names entry -> JointState name")
        gripper = _parse_gripper(arm["gripper"], f"{at}.gripper") if arm.get("gripper") else None
        # Command order is joint_names order, whatever order the mapping was written in:
        # controllers without joint names (Float64MultiArray, Interbotix groups) rely on it.
        joints = dict(sorted(joints.items(), key=lambda kv: joint_names.index(kv[0]) if kv[0] in joint_names else -1))
        names = list(joints) + ([gripper.joint] if gripper else [])
        unknown = [n for n in names if n not in joint_names]
        if unknown:
            raise ConfigError(f"{at}: joints {unknown} are not in joint_names {list(joint_names)}")
        covered += names
        arms.append(ArmConfig(
            name=str(arm_name),
            joint_state_topic=str(_require(arm, "joint_state_topic", at, str, "a topic name")),
            command_namespace=str(arm.get("command_namespace", arm_name)),
            joints={str(k): str(v) for k, v in joints.items()},
            gripper=gripper,
            indices=tuple(joint_names.index(n) for n in names),
        ))
    missing = [n for n in joint_names if n not in covered]
    duplicated = sorted({n for n in covered if covered.count(n) > 1})
    if missing or duplicated:
        raise ConfigError(f"{where}.arms: every joint_names entry must belong to exactly one arm "
                          f"(missing {missing}, in several arms {duplicated})")

    cams_raw = _require(raw, "cameras", where, dict, "a mapping camera name -> {topic, required}")
    cameras = []
    for cam_name, cam in cams_raw.items():
        cw = f"{where}.cameras.{cam_name}"
        if not isinstance(cam, dict):
            raise ConfigError(f"{cw}: expected a mapping with 'topic'")
        check_keys(cam, CAMERA_KEYS, cw)
        cameras.append(CameraConfig(str(cam_name), str(_require(cam, "topic", cw, str, "a topic name")),
                                    bool(cam.get("required", True))))
    transport = str(raw.get("camera_transport", "raw"))
    if transport not in ("raw", "compressed"):
        raise ConfigError(f"{where}.camera_transport: expected 'raw' or 'compressed', got {transport!r}")
    planning = parse_section(PlanningSettings, raw.get("planning"), f"{where}: planning")
    execution = parse_section(ExecutionSettings, raw.get("execution"), f"{where}: execution")
    if planning.enabled and planning.deadline_s >= execution.max_chunk_age_s:
        raise ConfigError(
            f"{where}: planning.deadline_s ({planning.deadline_s:g} s) must be below "
            f"execution.max_chunk_age_s ({execution.max_chunk_age_s:g} s): a chunk that waited that long "
            "for the planner would be refused by the executor as stale")
    if not isinstance(raw.get("limits"), dict):
        raise ConfigError(f"{where}: missing section 'limits' (lower, upper, max_step_per_tick per joint)")
    return RobotConfig(
        path=Path(path), robot=str(raw.get("robot", Path(str(path)).stem)), control_rate_hz=rate,
        joint_names=joint_names, arms=tuple(arms), cameras=tuple(cameras), camera_transport=transport,
        observation=parse_section(ObservationSettings, raw.get("observation"), f"{where}: observation"),
        limits=parse_section(LimitsSettings, raw["limits"], f"{where}: limits"),
        execution=execution,
        output=parse_section(OutputSettings, raw.get("output"), f"{where}: output"),
        policy=parse_section(PolicySettings, raw.get("policy"), f"{where}: policy"),
        planning=planning,
        sim=parse_section(SimSettings, raw.get("sim"), f"{where}: sim"),
        recording=parse_section(RecordingSettings, raw.get("recording"), f"{where}: recording"),
        collection=parse_section(CollectionSettings, raw.get("collection"), f"{where}: collection"),
        action_topic=_coerce(raw.get("action_topic", EXECUTED_COMMAND_TOPIC), str, f"{where}: action_topic"),
        raw=raw,
    )


def joint_state_to_positions(arm: ArmConfig, names: list[str], positions, out: np.ndarray) -> None:
    """Write one arm's JointState into `out` ([dof], joint_names order). Raises
    ValueError naming the missing joint when the message lacks one."""
    index = {name: i for i, name in enumerate(names)}
    for slot, joint in zip(arm.indices, arm.joints):
        state_name = arm.joints[joint]
        if state_name not in index:
            raise ValueError(f"{arm.joint_state_topic}: JointState has no joint {state_name!r} (has {names})")
        out[slot] = positions[index[state_name]]
    if arm.gripper is not None:
        g = arm.gripper
        if g.state_name not in index:
            raise ValueError(f"{arm.joint_state_topic}: JointState has no joint {g.state_name!r} (has {names})")
        out[arm.indices[-1]] = g.normalize_finger(positions[index[g.state_name]])
