"""The robot configuration file (config/<robot>.yaml): loading and validation.

Every node, the launch file and the CLI read the same YAML. Each section is a frozen
dataclass below (``PolicySettings``, ``PlanningSettings``, ...) holding every key's type,
default and check in one place; one generic validator (:func:`parse_section`) turns a YAML
mapping into it. An unknown or misspelled key is an error naming the file, the key and the
closest valid key. Errors name the file, the field and what was expected, at start-up;
nothing here guesses a missing value that must match the hardware.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

PACKAGE_DIR = Path(__file__).resolve().parent


class ConfigError(ValueError):
    """A configuration that cannot be used; the message says where and why."""


def default_config_dir() -> Path:
    """config/ of a source checkout, or share/cosmos_policy_ros/config when installed."""
    candidates = [PACKAGE_DIR.parent / "config"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "cosmos_policy_ros" / "config")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[0]


def resolve_config_path(path: str | os.PathLike) -> Path:
    """A file path, or a bare robot name (`aloha`) looked up in the config directory."""
    path = Path(path)
    if path.exists():
        return path
    named = default_config_dir() / (path.name if path.suffix else f"{path.name}.yaml")
    if named.exists():
        return named
    raise ConfigError(f"config file {str(path)!r} not found (also looked for {named})")


# ------------------------------------------------------------------------ graph topics
# Relative names of the topics the package's own nodes exchange (remap them, never edit).
ACTION_CHUNK_TOPIC = "action_chunk"          # policy_node -> chunk_executor_node (ActionChunk)
EXECUTED_COMMAND_TOPIC = "executed_command"  # chunk_executor_node: the command sent each tick
EPISODE_EVENTS_TOPIC = "episode_events"      # EpisodeEvent: START / STOP / LABEL
SIM_OBJECT_POSE_TOPIC = "sim/object_pose"    # sim_node: privileged object pose (scripted expert)
SIM_REWARD_TOPIC = "sim/reward"              # sim_node: the task's reward
EXECUTOR_EXECUTING_TOPIC = "executor/executing"  # sim eval mode: ticks commanded from a chunk


# ------------------------------------------------------------------------ validation
def _check(check, expected: str) -> dict[str, Any]:
    """Field metadata: a predicate on the (typed) value and what it expects, for errors."""
    return {"check": check, "expected": expected}


def setting(default: Any, check=None, expected: str = "", mutable: bool = False):
    """A settings field: its default, and optionally a predicate with its description."""
    meta = _check(check, expected) if check is not None else {}
    if mutable:
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    if origin is dict:
        return f"a mapping to {_type_name(typing.get_args(hint)[1])}"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string",
            type(None): "null"}.get(hint, getattr(hint, "__name__", str(hint)))


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` as type ``hint`` (bool, int, float, str, Literal, tuple[X, ...],
    dict[str, X], unions with None); ConfigError naming ``where`` otherwise."""
    origin = typing.get_origin(hint)
    bad = ConfigError(f"{where}: expected {_type_name(hint)}, got {value!r}")
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise bad
    if origin is Literal:
        if value in typing.get_args(hint):
            return value
        raise bad
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        item = typing.get_args(hint)[0]
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        key_t, item = typing.get_args(hint)
        return {_coerce(k, key_t, where): _coerce(v, item, f"{where}.{k}") for k, v in value.items()}
    if hint is type(None):
        if value is None:
            return None
        raise bad
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if isinstance(value, bool):
        raise bad  # YAML true/false is never a number or a string here
    if hint is int:
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return int(value)
        raise bad
    if hint is float:
        if isinstance(value, (int, float)):
            return float(value)
        raise bad
    if hint is str:
        if isinstance(value, str):
            return value
        raise bad
    raise TypeError(f"{where}: settings type {hint!r} is not supported by the validator")


def check_keys(mapping: dict[str, Any], allowed, where: str) -> None:
    """ConfigError for the first key not in ``allowed``, with the closest valid key."""
    allowed = list(allowed)
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}{hint} (valid keys: {', '.join(allowed)})")


S = typing.TypeVar("S")


def parse_section(cls: type[S], mapping: Any, where: str) -> S:
    """A settings dataclass from a YAML mapping: unknown keys refused (with the closest valid
    key), each value checked against its field's type and predicate, defaults for the rest."""
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(mapping).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_keys(mapping, fields, where)
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in mapping.items():
        at = f"{where}.{key}"
        typed = _coerce(value, hints[key], at)
        check = fields[key].metadata.get("check")
        if check is not None and not check(typed):
            raise ConfigError(f"{at}: expected {fields[key].metadata['expected']}, got {value!r}")
        values[key] = typed
    try:
        return cls(**values)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _is_device(name: str) -> bool:
    return re.fullmatch(r"cpu|cuda(:\d+)?|mps|xpu(:\d+)?", name) is not None


def _positive(v) -> bool:
    return v > 0


def _non_negative(v) -> bool:
    return v >= 0


# -------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class ObservationSettings:
    """``observation:`` how far apart the messages of one observation may be."""

    max_skew_s: float = setting(0.1, _positive, "seconds > 0")  # newest minus oldest message
    max_age_s: float = setting(0.5, _positive, "seconds > 0")  # now minus oldest message


@dataclass(frozen=True)
class LimitsSettings:
    """``limits:`` per joint (joint_names order), or one number for every joint; checked
    against the joints by ``control.safety.JointLimits``."""

    lower: tuple[float, ...] | float
    upper: tuple[float, ...] | float
    max_step_per_tick: tuple[float, ...] | float


@dataclass(frozen=True)
class ExecutionSettings:
    """``execution:`` how the chunk executor switches, blends and refuses chunks."""

    blend_ticks: int = setting(5, _non_negative, "an integer >= 0")
    # Refuse chunks computed from older observations (must exceed planning.deadline_s).
    max_chunk_age_s: float = setting(6.0, _positive, "seconds > 0")
    max_future_s: float = setting(0.05, _non_negative, "seconds >= 0")
    start_enabled: bool = True
    keep_command_on_resync: tuple[str, ...] = ()


@dataclass(frozen=True)
class OutputSettings:
    """``output:`` how commands reach the arm controllers."""

    adapter: Literal["position", "trajectory", "interbotix"] = "position"
    gripper_unit: Literal["normalized", "finger_m", "motor_rad"] = "normalized"
    # interbotix: set the grippers' current_based_position mode at start-up through the driver's
    # set_operating_modes service ("set"), or trust it was set ("assume").
    interbotix_gripper_mode: Literal["set", "assume"] = "set"
    interbotix_service_timeout_s: float = setting(10.0, _positive, "seconds > 0")


POLICY_TYPES = ("scripted_transfer_cube", "replay", "cosmos")


@dataclass(frozen=True)
class PolicySettings:
    """``policy:`` which policy the policy node runs and when it asks for the next chunk."""

    type: Literal["scripted_transfer_cube", "replay", "cosmos"] = "scripted_transfer_cube"
    checkpoint: str = ""  # cosmos: checkpoint folder ("" = the shipped default)
    backend: Literal["torch", "onnx"] = "torch"
    decode_future_images: bool = False
    replay_episode: str = ""
    task: str = ""
    seed: int | None = None  # None: the checkpoint's own seed (converted ALOHA: 195)
    horizon: int = setting(50, _positive, "an integer >= 1")  # steps per chunk, non-model policies
    # torch.compile the denoiser: auto (on CUDA only) | true | false
    compile: Literal["auto", "true", "false"] | bool = "auto"
    trigger: Literal["overlapped", "blocking", "adaptive"] = "adaptive"
    trigger_margin_s: float = setting(0.1, _non_negative, "seconds >= 0")


PLANNING_AGGREGATIONS = ("majority_mean", "mean", "lcb", "success_vote")
ENSEMBLE_STEPS = ("linspace", "full")
# The official ensemble threshold: a value prediction above it counts as "predicts success".
DEFAULT_SUCCESS_THRESHOLD = 0.05


def _num_steps_ok(steps: dict[str, int]) -> bool:
    return all(k in ("world_model", "value") and v >= 1 for k, v in steps.items())


@dataclass(frozen=True)
class PlanningSettings:
    """``planning:`` best-of-N planning (see config/aloha.yaml for the meaning of each key)."""

    enabled: bool = False
    num_candidates: int = setting(8, _positive, "an integer >= 1")
    # planner_node refuses requests with more candidates (N x ensemble must fit the device)
    max_candidates: int = setting(16, _positive, "an integer >= 1")
    deadline_s: float = setting(5.0, _positive, "seconds > 0")
    request_topic: str = setting("planner/request", bool, "a topic name")
    result_topic: str = setting("planner/result", bool, "a topic name")
    decision_topic: str = setting("planning/decision", bool, "a topic name")
    imagination_topic: str = setting("planner/imagination", bool, "a topic prefix")
    publish_imagination: bool = True
    checkpoint: str = ""
    num_future_samples: int = setting(3, _positive, "an integer >= 1")
    num_value_samples: int = setting(5, _positive, "an integer >= 1")
    aggregation: Literal["majority_mean", "mean", "lcb", "success_vote"] = "majority_mean"
    success_threshold: float = setting(DEFAULT_SUCCESS_THRESHOLD, lambda v: 0 <= v < 1, "a value in [0, 1)")
    search_depth: int = setting(1, lambda v: v == 1, "1 (depth > 1 search is not implemented yet)")
    num_steps: dict[str, int] = setting({}, _num_steps_ok, "a mapping with world_model / value step counts "
                                        ">= 1 (empty: the checkpoint's)", mutable=True)
    max_batch_size: int = setting(0, _non_negative, "an integer >= 0 (0: no limit)")
    seed: int | None = setting(None, lambda v: v is None or v >= 0,
                               "an integer >= 0 or null (the planning checkpoint's seed; converted ALOHA: 195)")
    # Ensemble member step counts: "linspace" as the official ALOHA planner (world model 1, 3, 5;
    # value 1..5 steps), "full": every member at the checkpoint's count.
    ensemble_steps: Literal["linspace", "full"] = "linspace"
    compile: Literal["auto", "true", "false"] | bool = "auto"  # torch.compile the planning model's denoiser
    # One planning model replica per device; candidates are split across them (empty: the default device).
    devices: tuple[str, ...] = setting((), lambda d: all(_is_device(x) for x in d) and len(set(d)) == len(d),
                                       "a list of distinct torch devices such as [cuda:0, cuda:1] "
                                       "(empty: the default device)")

    def __post_init__(self) -> None:
        if self.num_candidates > self.max_candidates:
            raise ValueError(f"planning.num_candidates: {self.num_candidates} is more than planning.max_candidates "
                             f"= {self.max_candidates}; the planner would refuse every request")

    @classmethod
    def from_config(cls, config: "RobotConfig") -> "PlanningSettings":
        return config.planning

    def checkpoint_path(self) -> Path:
        from cosmos_policy_ros.model.checkpoint import shipped_checkpoint

        return Path(self.checkpoint) if self.checkpoint else shipped_checkpoint("tiny_cosmos_planning")


@dataclass(frozen=True)
class SimSettings:
    """``sim:`` the MuJoCo ALOHA simulation behind the robot's topics (sim_node)."""

    task: Literal["transfer_cube", "insertion"] = "transfer_cube"
    num_episodes: int = setting(1, _non_negative, "an integer >= 0 (0: forever)")
    seed: int = 0  # seed of the first episode; episode k uses seed + k
    camera_rate_hz: float = setting(5.0, _positive, "a rate in Hz > 0")
    image_height: int = setting(240, _positive, "pixels > 0")
    image_width: int = setting(320, _positive, "pixels > 0")
    real_time_factor: float = setting(1.0, _positive, "a factor > 0")
    episode_length_s: float = setting(8.0, _positive, "seconds > 0")
    mujoco_cameras: dict[str, str] = setting({}, mutable=True)  # robot camera name -> MuJoCo camera
    lockstep: bool = True
    lockstep_timeout_s: float = setting(0.25, _positive, "seconds > 0")
    wait_for_graph_s: float = setting(60.0, _positive, "seconds > 0")
    # Eval mode: sim time stops while the executor has no chunk to run, so compute time cannot
    # change an episode's outcome (use with policy.trigger: blocking, which `eval` sets).
    eval_mode: bool = False
    eval_max_wait_s: float = setting(120.0, _positive, "seconds > 0")  # longest wall wait for a chunk


@dataclass(frozen=True)
class RecordingSettings:
    """``recording:`` where recorder_node writes episode bags."""

    output_dir: str = setting("rollouts", bool, "a folder")


TOP_LEVEL_KEYS = ("robot", "control_rate_hz", "joint_names", "arms", "cameras", "camera_transport",
                  "observation", "limits", "execution", "output", "policy", "planning", "sim", "recording",
                  "action_topic")
ARM_KEYS = ("joint_state_topic", "command_namespace", "joints", "gripper")
CAMERA_KEYS = ("topic", "required")


GRIPPER_UNITS = ("normalized", "finger_m", "motor_rad")

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
    action_topic: str
    raw: dict[str, Any]

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    @property
    def control_period_s(self) -> float:
        return 1.0 / self.control_rate_hz

    @property
    def max_skew_s(self) -> float:
        return self.observation.max_skew_s

    @property
    def max_age_s(self) -> float:
        return self.observation.max_age_s


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
