"""The bimanual ALOHA MuJoCo simulation from `gym-aloha`, stepped and rendered on demand.

gym-aloha's `AlohaEnv.step` renders three 480x640 cameras every physics step (tens of ms
each on a CPU); the sim node needs physics at the control rate and cameras only at the
camera rate, so this class drives gym-aloha's physics and task objects directly.

Joint order and units are gym-aloha's (and the real ALOHA's): 14 values, per arm
[waist, shoulder, elbow, forearm_roll, wrist_angle, wrist_rotate] in radians followed by
the gripper as a normalized opening in [0, 1] (0 closed, 1 open); left arm first.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

# ALOHA camera name -> MuJoCo camera in gym-aloha's scene.
DEFAULT_CAMERAS = {
    "cam_high": "top",
    "cam_left_wrist": "left_wrist",
    "cam_right_wrist": "right_wrist",
    "cam_low": "angle",
}
TASKS = ("transfer_cube", "insertion")
SUCCESS_REWARD = 4
PHYSICS_DT_S = 0.02  # gym-aloha's control timestep (50 Hz)
# gym-aloha's initial object ranges (utils.sample_box_pose / sample_insertion_pose), metres.
OBJECT_RANGES = {
    "transfer_cube": ((0.0, 0.2), (0.4, 0.6)),
    "insertion": ((0.1, 0.2), (0.4, 0.6), (-0.2, -0.1), (0.4, 0.6)),  # peg x, y; socket x, y
}
OBJECT_HEIGHT_M = 0.05


def _import_gym_aloha():
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        from dm_control import mujoco
        from gym_aloha import constants, utils
        from gym_aloha.tasks import sim as sim_tasks
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "the ALOHA simulation needs the `gym-aloha` package (pip install gym-aloha) "
            f"and a headless OpenGL (MUJOCO_GL=egl or osmesa): {exc}"
        ) from exc
    return mujoco, constants, utils, sim_tasks


def sample_object_pose(task: str, seed: int | None, range_scale: float) -> np.ndarray:
    """The initial object pose(s) as gym-aloha draws them (one ``RandomState(seed)``, x and y
    uniform in order), from ranges scaled by ``range_scale`` about their centres; z fixed,
    upright. Transfer cube: ``[7]`` xyz + wxyz; insertion: peg then socket, ``[14]``."""
    if task not in OBJECT_RANGES:
        raise ValueError(f"sim task must be one of {TASKS}, got {task!r}")
    if not range_scale > 0:
        raise ValueError(f"object range scale must be > 0, got {range_scale}")
    rng = np.random.RandomState(seed)
    ranges = OBJECT_RANGES[task]
    poses = []
    for x_range, y_range in zip(ranges[0::2], ranges[1::2]):
        bounds = []
        for low, high in (x_range, y_range, (OBJECT_HEIGHT_M, OBJECT_HEIGHT_M)):
            centre, half = (low + high) / 2, (high - low) / 2 * range_scale
            bounds.append((centre - half, centre + half))
        bounds = np.asarray(bounds)
        position = rng.uniform(bounds[:, 0], bounds[:, 1])
        poses.append(np.concatenate([position, [1.0, 0.0, 0.0, 0.0]]))
    return np.concatenate(poses)


@dataclass(frozen=True)
class SimState:
    """What one physics step leaves behind."""

    time_s: float
    joint_positions: np.ndarray  # [14], radians / normalized gripper
    joint_velocities: np.ndarray  # [14]
    finger_positions_m: np.ndarray  # [2] left, right finger (metres), as Interbotix reports
    reward: int
    max_reward: int  # best reward so far this episode
    success: bool
    object_pose: np.ndarray  # [7] xyz + wxyz quaternion of the task object (cube / peg)


class AlohaSim:
    """One gym-aloha task: reset(seed), step(command), render(cameras)."""

    def __init__(self, task: str = "transfer_cube"):
        if task not in TASKS:
            raise ValueError(f"sim task must be one of {TASKS}, got {task!r}")
        mujoco, constants, utils, sim_tasks = _import_gym_aloha()
        self.task_name = task
        self._constants = constants
        self._utils = utils
        self._sim_tasks = sim_tasks
        xml = constants.ASSETS_DIR / f"bimanual_viperx_{task}.xml"
        self.physics = mujoco.Physics.from_xml_path(str(xml))
        self._task = sim_tasks.TransferCubeTask() if task == "transfer_cube" else sim_tasks.InsertionTask()
        self._substeps = max(1, int(round(PHYSICS_DT_S / self.physics.model.opt.timestep)))
        self._time_s = 0.0
        self._reward = 0
        self._max_reward = 0
        self._renderers: dict[tuple[int, int], object] = {}
        self.reset(seed=0)

    @property
    def dof(self) -> int:
        return 14

    @property
    def time_s(self) -> float:
        return self._time_s

    def reset(self, seed: int | None, object_range_scale: float = 1.0) -> SimState:
        """New episode; ``object_range_scale`` != 1 widens (or narrows) the initial object
        ranges about their centre (rollout collection), 1 is gym-aloha's own sampler."""
        if object_range_scale != 1.0:
            pose = sample_object_pose(self.task_name, seed, object_range_scale)
        elif self.task_name == "transfer_cube":
            pose = self._utils.sample_box_pose(seed)
        else:
            pose = np.concatenate(self._utils.sample_insertion_pose(seed))
        # gym-aloha's tasks read the object pose from this module-level slot at reset.
        self._sim_tasks.BOX_POSE[0] = pose
        self._task.initialize_episode(self.physics)
        self.physics.forward()
        self._time_s = 0.0
        self._reward = 0
        self._max_reward = 0
        return self.state()

    def step(self, command: np.ndarray) -> SimState:
        """Apply a 14-dof position command for one control period (20 ms)."""
        command = np.asarray(command, dtype=np.float64)
        if command.shape != (14,) or not np.all(np.isfinite(command)):
            raise ValueError(f"sim command must be 14 finite values, got shape {command.shape}")
        self._task.before_step(command, self.physics)
        self.physics.step(self._substeps)
        self._time_s += PHYSICS_DT_S
        self._reward = int(self._task.get_reward(self.physics))
        self._max_reward = max(self._max_reward, self._reward)
        return self.state()

    def state(self) -> SimState:
        qpos = self.physics.data.qpos
        return SimState(
            time_s=self._time_s,
            joint_positions=self._task.get_qpos(self.physics),
            joint_velocities=self._task.get_qvel(self.physics),
            finger_positions_m=np.array([qpos[6], qpos[14]], dtype=np.float64),
            reward=self._reward,
            max_reward=self._max_reward,
            success=self._max_reward >= SUCCESS_REWARD,
            object_pose=np.array(qpos[16:23], dtype=np.float64),
        )

    def render(self, mujoco_camera: str, height: int, width: int) -> np.ndarray:
        """uint8 RGB [height, width, 3] from one MuJoCo camera."""
        # mujoco.Renderer reuses one GL context and buffer per size: about half the cost
        # of dm_control's Physics.render per frame on a software (llvmpipe) renderer.
        import mujoco

        key = (height, width)
        renderer = self._renderers.get(key)
        if renderer is None:
            renderer = self._renderers[key] = mujoco.Renderer(self.physics.model.ptr, height, width)
        renderer.update_scene(self.physics.data.ptr, camera=mujoco_camera)
        return renderer.render()

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    # Gripper conversions between gym-aloha's normalized opening and finger metres.
    def normalize_finger(self, finger_m: np.ndarray) -> np.ndarray:
        return self._constants.normalize_puppet_gripper_position(finger_m)
