"""Per-arm controller commands from one joint-position command (`[dof]`, joint_names order).

Three adapters, chosen by `output.adapter` in the robot YAML:
- position: std_msgs/Float64MultiArray on `<ns>/commands/position` every tick (ros2_control
  forward position controller): arm joints, then the gripper in `output.gripper_unit`.
- trajectory: trajectory_msgs/JointTrajectory on `<ns>/arm_controller/joint_trajectory`
  (ros2_control JointTrajectoryController): one point reached after one control period.
- interbotix: interbotix_xs_msgs/JointGroupCommand {name: "arm", cmd: 6 joints} on
  `<ns>/commands/joint_group` and JointSingleCommand {name: "gripper", cmd: motor rad} on
  `<ns>/commands/joint_single`, as ALOHA's real_env drives its follower arms.
The splitting and unit conversion here are plain Python; the node builds messages.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cosmos_policy_ros.config import ArmConfig, RobotConfig

ADAPTERS = ("position", "trajectory", "interbotix")
GRIPPER_UNITS = ("normalized", "finger_m", "motor_rad")


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
    return adapter, unit


def split_command(config: RobotConfig, command: np.ndarray, gripper_unit: str) -> list[ArmCommand]:
    out = []
    for arm in config.arms:
        n_arm = len(arm.joints)
        values = command[list(arm.indices)]
        gripper = None
        if arm.gripper is not None:
            opening = float(values[-1])
            gripper = {"normalized": opening,
                       "finger_m": arm.gripper.finger_from_normalized(opening),
                       "motor_rad": arm.gripper.motor_from_normalized(opening)}[gripper_unit]
        out.append(ArmCommand(arm, arm.command_joint_names, values[:n_arm].astype(np.float64), gripper))
    return out
