"""Per-arm controller commands from one joint-position command (`[dof]`, joint_names order).

Three adapters, chosen by `output.adapter` in the robot YAML:
- position: std_msgs/Float64MultiArray on `<ns>/commands/position` every tick (ros2_control
  forward position controller): arm joints, then the gripper in `output.gripper_unit`.
- trajectory: trajectory_msgs/JointTrajectory on `<ns>/arm_controller/joint_trajectory`
  (ros2_control JointTrajectoryController): one point reached after one control period.
- interbotix: interbotix_xs_msgs/JointGroupCommand {name: "arm", cmd: 6 joints} on
  `<ns>/commands/joint_group` and JointSingleCommand {name: "gripper", cmd: motor rad} on
  `<ns>/commands/joint_single`, as ALOHA's real_env drives its follower arms. The
  Interbotix driver reads a gripper command as motor radians only in its
  `current_based_position` mode; Trossen's bringup starts the grippers in `linear_position`
  (metres), so the adapter sets the mode at start-up through `<ns>/set_operating_modes`
  (interbotix_xs_msgs/srv/OperatingModes) or, with `output.interbotix_gripper_mode: assume`,
  trusts that it is set.
The splitting, unit conversion and the start-up plan here are plain Python; the node builds
messages and calls the service.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cosmos_policy_ros.config import ArmConfig, ConfigError, RobotConfig

# The Interbotix operating mode in which JointSingleCommand.cmd is a motor position in radians.
INTERBOTIX_GRIPPER_MODE = "current_based_position"


@dataclass(frozen=True)
class ArmCommand:
    arm: ArmConfig
    joint_names: list[str]  # controller names (arm joints, then "gripper")
    arm_positions: np.ndarray  # [n_arm] radians
    gripper: float | None  # in the adapter's gripper unit


def adapter_settings(config: RobotConfig) -> tuple[str, str]:
    adapter, unit = config.output.adapter, config.output.gripper_unit
    if adapter == "interbotix":
        unit = "motor_rad"  # JointSingleCommand drives the gripper motor position
    if unit == "motor_rad":
        for arm in config.arms:
            if arm.gripper is not None and not arm.gripper.has_motor_range:
                raise ConfigError(f"{config.path}: arms.{arm.name}.gripper: the '{adapter}' adapter commands the "
                                  "gripper in motor radians; set motor_closed_rad and motor_open_rad (or a preset)")
    return adapter, unit


def split_command(config: RobotConfig, command: np.ndarray, gripper_unit: str) -> list[ArmCommand]:
    out = []
    for arm in config.arms:
        n_arm = len(arm.joints)
        values = command[list(arm.indices)]
        gripper = None
        if arm.gripper is not None:
            opening = float(values[-1])
            gripper = float(arm.gripper.from_normalized(opening, gripper_unit))
        out.append(ArmCommand(arm, arm.command_joint_names, values[:n_arm].astype(np.float64), gripper))
    return out


@dataclass(frozen=True)
class OperatingModeRequest:
    """One interbotix_xs_msgs/srv/OperatingModes call: the fields Trossen's aloha sets for a
    follower gripper (robot_utils.setup_follower_bot; profile as in its follower_modes yaml)."""

    service: str  # relative: <command_namespace>/set_operating_modes
    cmd_type: str = "single"
    name: str = "gripper"
    mode: str = INTERBOTIX_GRIPPER_MODE
    profile_type: str = "velocity"
    profile_velocity: int = 0
    profile_acceleration: int = 0


@dataclass(frozen=True)
class InterbotixGripperPlan:
    action: str  # output.interbotix_gripper_mode: "set" | "assume"
    timeout_s: float  # for all calls together
    requests: tuple[OperatingModeRequest, ...]


def interbotix_gripper_plan(config: RobotConfig) -> InterbotixGripperPlan:
    """What the interbotix adapter does with the grippers' operating mode at start-up."""
    requests = tuple(OperatingModeRequest(f"{arm.command_namespace}/set_operating_modes")
                     for arm in config.arms if arm.gripper is not None)
    return InterbotixGripperPlan(config.output.interbotix_gripper_mode, config.output.interbotix_service_timeout_s,
                                 requests)


def gripper_mode_refusal(config: RobotConfig, plan: InterbotixGripperPlan, failures: list[str]) -> str:
    """The start-up refusal when the grippers' mode could not be set: what failed and the two
    ways out."""
    example = plan.requests[0] if plan.requests else OperatingModeRequest("<ns>/set_operating_modes")
    call = (f"ros2 service call /{example.service} interbotix_xs_msgs/srv/OperatingModes "
            f"\"{{cmd_type: {example.cmd_type}, name: {example.name}, mode: {example.mode}, "
            f"profile_type: {example.profile_type}, profile_velocity: {example.profile_velocity}, "
            f"profile_acceleration: {example.profile_acceleration}}}\"")
    return (f"refusing to start: the 'interbotix' adapter sends gripper commands in motor radians, which the "
            f"Interbotix driver reads as such only in {INTERBOTIX_GRIPPER_MODE} mode (Trossen's bringup starts "
            f"the grippers in linear_position, metres), and setting that mode failed: {'; '.join(failures)}. "
            f"Start the driver first (e.g. ros2 launch aloha aloha_bringup.launch.py) and check the arms' "
            f"command_namespace in {config.path}, or set the mode yourself for each arm ({call}) and set "
            f"output.interbotix_gripper_mode: assume")
