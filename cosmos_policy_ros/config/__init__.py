"""The robot configuration file (config/<robot>.yaml): loading and validation.

Every node, the launch file and the CLI read the same YAML. Each section is a frozen
dataclass below (``PolicySettings``, ``PlanningSettings``, ...) holding every key's type,
default and check in one place; one generic validator (:func:`parse_section`) turns a YAML
mapping into it. An unknown or misspelled key is an error naming the file, the key and the
closest valid key. Errors name the file, the field and what was expected, at start-up;
nothing here guesses a missing value that must match the hardware.
"""
from cosmos_policy_ros.config.errors import (
    PACKAGE_DIR,
    ConfigError,
    default_config_dir,
    resolve_config_path,
)
from cosmos_policy_ros.config.robot import (
    GRIPPER_PRESETS,
    GRIPPER_UNITS,
    ArmConfig,
    CameraConfig,
    GripperConfig,
    RobotConfig,
    joint_state_to_positions,
    load_config,
    parse_config,
)
from cosmos_policy_ros.config.sections import (
    ACTION_CHUNK_TOPIC,
    DEFAULT_SUCCESS_THRESHOLD,
    ENSEMBLE_STEPS,
    EPISODE_EVENTS_TOPIC,
    EXECUTED_COMMAND_TOPIC,
    EXECUTOR_EXECUTING_TOPIC,
    PLANNING_AGGREGATIONS,
    POLICY_TYPES,
    SIM_OBJECT_POSE_TOPIC,
    SIM_REWARD_TOPIC,
    CollectionSettings,
    ExecutionSettings,
    LimitsSettings,
    ObservationSettings,
    OutputSettings,
    PlanningSettings,
    PolicySettings,
    RecordingSettings,
    SimSettings,
)
from cosmos_policy_ros.config.validation import check_keys, parse_section, setting

__all__ = [
    "PACKAGE_DIR", "ConfigError", "default_config_dir", "resolve_config_path", "GRIPPER_PRESETS", "GRIPPER_UNITS",
    "ArmConfig", "CameraConfig", "GripperConfig", "RobotConfig", "joint_state_to_positions", "load_config",
    "parse_config", "check_keys", "parse_section", "setting",
    "ACTION_CHUNK_TOPIC",
    "DEFAULT_SUCCESS_THRESHOLD",
    "ENSEMBLE_STEPS",
    "EPISODE_EVENTS_TOPIC",
    "EXECUTED_COMMAND_TOPIC",
    "EXECUTOR_EXECUTING_TOPIC",
    "CollectionSettings",
    "ExecutionSettings",
    "LimitsSettings",
    "ObservationSettings",
    "OutputSettings",
    "PLANNING_AGGREGATIONS",
    "POLICY_TYPES",
    "PlanningSettings",
    "PolicySettings",
    "RecordingSettings",
    "SIM_OBJECT_POSE_TOPIC",
    "SIM_REWARD_TOPIC",
    "SimSettings",
]
