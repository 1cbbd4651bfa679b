"""Scripted experts for the simulated ALOHA tasks: demonstration sources and the
default policy of the closed-loop demo.

The transfer-cube expert follows the classic ALOHA/ACT recipe: end-effector waypoints
(right gripper picks the cube, meets the left gripper mid-air, hands over) are tracked
by gym-aloha's mocap-driven end-effector model, and the resulting joint trajectory (with
the *commanded* gripper openings, since a closed gripper holding a cube cannot reach its
command) is what the joint-space robot replays. The expert needs the cube's initial
pose: privileged sim information, published by the sim node on `sim/object_pose`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cosmos_policy_ros.control.replay import TimeIndexedTrajectoryPolicy
from cosmos_policy_ros.sim.aloha_sim import PHYSICS_DT_S, _import_gym_aloha
from cosmos_policy_ros.types import Observation, PolicyOutput

EPISODE_STEPS = 400  # 8 s at 50 Hz, as in the ALOHA sim datasets


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of wxyz quaternions."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ])


def quat_from_axis_angle(axis, degrees: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    half = np.deg2rad(degrees) / 2.0
    return np.concatenate([[np.cos(half)], np.sin(half) * axis])


@dataclass(frozen=True)
class Waypoint:
    step: int
    xyz: np.ndarray
    quat: np.ndarray  # wxyz
    gripper: float  # normalized opening


def _interpolate(waypoints: list[Waypoint], step: int) -> np.ndarray:
    """[xyz, quat, gripper] at `step`, linear between waypoints (held after the last)."""
    for prev, nxt in zip(waypoints, waypoints[1:]):
        if prev.step <= step <= nxt.step:
            frac = (step - prev.step) / max(1, nxt.step - prev.step)
            xyz = prev.xyz + (nxt.xyz - prev.xyz) * frac
            quat = prev.quat + (nxt.quat - prev.quat) * frac
            gripper = prev.gripper + (nxt.gripper - prev.gripper) * frac
            return np.concatenate([xyz, quat, [gripper]])
    last = waypoints[-1]
    return np.concatenate([last.xyz, last.quat, [last.gripper]])


def transfer_cube_waypoints(box_xyz: np.ndarray, init_left: np.ndarray, init_right: np.ndarray):
    """End-effector plans (left, right) for the handover; poses are mocap [xyz, wxyz]."""
    pick_quat = quat_multiply(init_right[3:], quat_from_axis_angle([0, 1, 0], -60))
    meet_left_quat = quat_from_axis_angle([1, 0, 0], 90)
    meet = np.array([0.0, 0.5, 0.25])
    w = Waypoint
    left = [
        w(0, init_left[:3], init_left[3:], 0.0),
        w(100, meet + [-0.1, 0, -0.02], meet_left_quat, 1.0),   # approach the meeting point
        w(260, meet + [0.02, 0, -0.02], meet_left_quat, 1.0),   # reach the cube
        w(310, meet + [0.02, 0, -0.02], meet_left_quat, 0.0),   # close the gripper
        w(360, meet + [-0.1, 0, -0.02], meet_left_quat, 0.0),   # pull away
        w(EPISODE_STEPS, meet + [-0.1, 0, -0.02], meet_left_quat, 0.0),
    ]
    right = [
        w(0, init_right[:3], init_right[3:], 0.0),
        w(90, box_xyz + [0, 0, 0.08], pick_quat, 1.0),          # above the cube
        w(130, box_xyz + [0, 0, -0.015], pick_quat, 1.0),       # down
        w(170, box_xyz + [0, 0, -0.015], pick_quat, 0.0),       # grasp
        w(200, meet + [0.05, 0, 0], pick_quat, 0.0),  # lift towards meeting point
        w(220, meet, pick_quat, 0.0),
        w(310, meet, pick_quat, 1.0),                           # release to the left gripper
        w(360, meet + [0.1, 0, 0], pick_quat, 1.0),             # retreat
        w(EPISODE_STEPS, meet + [0.1, 0, 0], pick_quat, 1.0),
    ]
    return left, right


def transfer_cube_joint_trajectory(box_pose: np.ndarray) -> np.ndarray:
    """Joint targets [EPISODE_STEPS, 14] that hand the cube at `box_pose` (xyz + wxyz)
    from the right to the left gripper, computed in gym-aloha's end-effector model."""
    mujoco, constants, _, _ = _import_gym_aloha()
    from gym_aloha.tasks import sim_end_effector

    physics = mujoco.Physics.from_xml_path(
        str(constants.ASSETS_DIR / "bimanual_viperx_end_effector_transfer_cube.xml"))
    # gym-aloha's mocap welds are soft (solimp 0.25): with current MuJoCo the arms sag
    # several centimetres below the waypoints and never reach the cube. A stiff weld
    # tracks the plan the way the ALOHA recipe expects.
    for eq in range(physics.model.neq):
        physics.model.eq_solimp[eq] = [0.95, 0.99, 0.001, 0.5, 2.0]
    task = sim_end_effector.TransferCubeEndEffectorTask()
    with physics.reset_context():
        task.initialize_robots(physics)
        box_joint = physics.model.name2id("red_box_joint", "joint")
        physics.data.qpos[box_joint:box_joint + 7] = box_pose
    substeps = max(1, int(round(PHYSICS_DT_S / physics.model.opt.timestep)))
    init_left = np.concatenate([physics.data.mocap_pos[0], physics.data.mocap_quat[0]])
    init_right = np.concatenate([physics.data.mocap_pos[1], physics.data.mocap_quat[1]])
    left_plan, right_plan = transfer_cube_waypoints(np.asarray(box_pose[:3]), init_left, init_right)

    joints = np.empty((EPISODE_STEPS, 14))
    for step in range(EPISODE_STEPS):
        action = np.concatenate([_interpolate(left_plan, step), _interpolate(right_plan, step)])
        task.before_step(action, physics)
        physics.step(substeps)
        qpos = task.get_qpos(physics)
        # Commanded gripper openings, not measured ones (see module docstring).
        qpos[6] = constants.normalize_puppet_gripper_position(physics.data.ctrl[0])
        qpos[13] = constants.normalize_puppet_gripper_position(physics.data.ctrl[2])
        joints[step] = qpos
    return joints


class ScriptedTransferCubeExpert:
    """`Policy` that plans the expert trajectory for the cube pose it observes at the
    episode's first observation, then replays it indexed by time (see
    `replay.TimeIndexedTrajectoryPolicy`)."""

    required_privileged = ("object_pose",)

    def __init__(self, horizon: int = 50, control_period_s: float = PHYSICS_DT_S):
        self.horizon = horizon
        self.control_period_s = control_period_s
        self.reset()

    def reset(self) -> None:
        self._replay: TimeIndexedTrajectoryPolicy | None = None

    def infer(self, observation: Observation) -> PolicyOutput:
        if self._replay is None:
            pose = observation.privileged.get("object_pose")
            if pose is None:
                raise ValueError("the scripted expert needs the cube pose (sim/object_pose topic)")
            trajectory = transfer_cube_joint_trajectory(np.asarray(pose, dtype=np.float64))
            self._replay = TimeIndexedTrajectoryPolicy(trajectory, self.control_period_s, self.horizon)
        return self._replay.infer(observation)
