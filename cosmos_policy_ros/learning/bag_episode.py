"""Reading one recorded episode bag for conversion: the robot configuration the converter
needs (``DatasetConfig``), topic matching, and ``BagEpisode``, which reads joint states,
actions and camera frames with their log times (no ROS imports)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader

from cosmos_policy_ros.config import (
    EXECUTED_COMMAND_TOPIC,
    ConfigError,
    GripperConfig,
    RobotConfig,
    load_config,
    parse_config,
)
from cosmos_policy_ros.recording import (
    is_bag_closed,
)

DEFAULT_ACTION_TOPIC = EXECUTED_COMMAND_TOPIC
STATS_FILENAMES = ('dataset_statistics.json', 'aloha_dataset_statistics.json')

class DatasetError(RuntimeError):
    """A bag cannot be converted (names the bag and what is missing)."""


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class _ArmSpec:
    side: str
    topic: str
    columns: tuple[int, ...]  # positions in joint_names of the entries below
    state_names: tuple[str, ...]  # JointState names, same order as columns
    gripper_column: int | None
    gripper_state_name: str | None
    gripper: GripperConfig | None  # the config's finger -> normalized conversion


@dataclass(frozen=True)
class DatasetConfig:
    """What to read from a bag, resolved from the robot YAML (see module docstring)."""

    joint_names: tuple[str, ...]
    arms: tuple[_ArmSpec, ...]
    cameras: dict[str, str]  # camera name -> topic
    optional_cameras: frozenset[str]
    compressed: bool
    action_topic: str = DEFAULT_ACTION_TOPIC
    control_rate_hz: float = 50.0
    # RobotConfig.data_signature() of the config (None: built without one, nothing to compare)
    signature: Mapping[str, Any] | None = None

    @classmethod
    def from_robot_config(
        cls,
        config: RobotConfig | Mapping[str, Any] | None = None,
        *,
        action_topic: str | None = None,
        cameras: Sequence[str] | None = None,
    ) -> DatasetConfig:
        """Build from the robot config (a loaded ``RobotConfig``, the YAML as a dict, or None
        for the package's ``aloha`` config). ``cameras`` picks a subset by name (default: all
        cameras, the optional ones included when the bag has them)."""
        try:
            if config is None:
                robot = load_config('aloha')
            elif isinstance(config, RobotConfig):
                robot = config
            else:
                robot = parse_config(dict(config))
        except ConfigError as err:
            raise DatasetError(f'robot config: {err}') from err
        arms = []
        for arm in robot.arms:
            gripper = arm.gripper
            arms.append(_ArmSpec(
                side=arm.name, topic=arm.joint_state_topic,
                columns=arm.indices[:len(arm.joints)], state_names=tuple(arm.joints.values()),
                gripper_column=arm.indices[-1] if gripper else None,
                gripper_state_name=gripper.state_name if gripper else None,
                gripper=gripper,
            ))
        all_cameras = {c.name: c for c in robot.cameras}
        names = list(cameras) if cameras is not None else list(all_cameras)
        unknown = [c for c in names if c not in all_cameras]
        if unknown:
            raise DatasetError(f'cameras {unknown} are not in config cameras {list(all_cameras)}')
        compressed = robot.camera_transport == 'compressed'
        topics = {c: all_cameras[c].topic + ('/compressed' if compressed else '') for c in names}
        optional = frozenset(c for c in names if cameras is None and not all_cameras[c].required)
        return cls(
            joint_names=robot.joint_names, arms=tuple(arms), cameras=topics, optional_cameras=optional,
            compressed=compressed,
            action_topic=action_topic or robot.action_topic,
            control_rate_hz=robot.control_rate_hz,
            signature=robot.data_signature(),
        )

    @property
    def dof(self) -> int:
        return len(self.joint_names)


# --------------------------------------------------------------------------- bag reading


def _match_topic(bag: Path, topics: Iterable[str], wanted: str) -> str | None:
    """The bag topic for a config topic name: exact, else the one ending in /<name>
    (the recorder's namespace made the relative name absolute)."""
    topics = list(topics)
    bare = wanted.lstrip('/')
    for topic in topics:
        if topic.lstrip('/') == bare:
            return topic
    matches = [t for t in topics if t.endswith('/' + bare)]
    if len(matches) > 1:
        raise DatasetError(f'{bag}: topic {wanted!r} is ambiguous, the bag has {matches}')
    return matches[0] if matches else None


def _image_to_rgb(msg: Any, msgtype: str) -> np.ndarray:
    """Decoded bag image (rosbags message) -> uint8 RGB, with the policy node's decoder."""
    from cosmos_policy_ros.control.images import (
        ImageConversionError,
        compressed_to_rgb,
        image_to_rgb,
    )

    try:
        if msgtype == 'sensor_msgs/msg/CompressedImage':
            return compressed_to_rgb(msg.format, msg.data)
        return image_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian))
    except ImageConversionError as err:
        raise DatasetError(f'image cannot be decoded: {err}') from err


def _chunk_targets(chunks: list[tuple[int, np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray]:
    """ActionChunks as (stamp_ns, positions [H, dof], period_ns) -> timed targets where
    each chunk takes over from its stamp, as the executor runs them."""
    chunks.sort(key=lambda c: c[0])
    times: list[np.ndarray] = []
    values: list[np.ndarray] = []
    for i, (stamp, positions, period) in enumerate(chunks):
        t = stamp + period * np.arange(len(positions), dtype=np.int64)
        if i + 1 < len(chunks):
            keep = t < chunks[i + 1][0]
            t, positions = t[keep], positions[keep]
        times.append(t)
        values.append(positions)
    return np.concatenate(times), np.concatenate(values)


class BagEpisode:
    """The streams of one bag, checked against the config."""

    def __init__(self, bag: Path, cfg: DatasetConfig, typestore: Any) -> None:
        self.bag = bag
        self.cfg = cfg
        self.typestore = typestore
        if not bag.is_dir():
            raise DatasetError(f'{bag}: not a directory')
        if not any(bag.glob('*.mcap')) and not (bag / 'metadata.yaml').exists():
            raise DatasetError(f'{bag}: not a rosbag2 directory (no .mcap, no metadata.yaml)')
        if not is_bag_closed(bag):
            raise DatasetError(
                f'{bag}: bag was not closed (recorder killed?); make it readable with '
                f'`cosmos-policy-ros recover {bag}`'
            )
        self.reader = Reader(bag)
        self.reader.open()
        self.by_topic = {c.topic: c for c in self.reader.connections}
        available = sorted(self.by_topic)

        def need(topic: str, what: str, optional: bool = False) -> Any:
            name = _match_topic(bag, self.by_topic, topic)
            if name is None or self.by_topic[name].msgcount == 0:
                if optional:
                    return None
                self.reader.close()
                raise DatasetError(
                    f'{bag}: no messages on topic {topic!r} (needed for {what}); topics in the bag: {available}'
                )
            return self.by_topic[name]

        self.arm_conns = {arm.side: need(arm.topic, f'arm {arm.side} joint states') for arm in cfg.arms}
        self.action_conn = need(cfg.action_topic, 'actions')
        self.camera_conns = {}
        for cam, topic in cfg.cameras.items():
            conn = need(topic, f'camera {cam}', optional=cam in cfg.optional_cameras)
            if conn is not None:
                self.camera_conns[cam] = conn

    def close(self) -> None:
        self.reader.close()

    def _messages(self, conn: Any) -> Iterable[tuple[int, Any]]:
        for _, stamp, data in self.reader.messages(connections=[conn]):
            yield stamp, data

    def read_joints(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]]:
        """Per arm: times [N], positions [N, dof] (NaN outside the arm's columns),
        velocities and efforts (None unless every message has them for the arm's joints)."""
        out = {}
        dof = self.cfg.dof
        for arm in self.cfg.arms:
            conn = self.arm_conns[arm.side]
            names = list(arm.state_names) + ([arm.gripper_state_name] if arm.gripper_column is not None else [])
            cols = list(arm.columns) + ([arm.gripper_column] if arm.gripper_column is not None else [])
            times, pos, vel, eff = [], [], [], []
            has_vel = has_eff = True
            for stamp, data in self._messages(conn):
                msg = self.typestore.deserialize_cdr(data, conn.msgtype)
                lookup = {n: i for i, n in enumerate(msg.name)}
                missing = [n for n in names if n not in lookup]
                if missing:
                    raise DatasetError(
                        f'{self.bag}: JointState on {conn.topic!r} lacks {missing} (has {list(msg.name)}); '
                        f'check arms.{arm.side}.joints / gripper.state_name in the robot config'
                    )
                idx = [lookup[n] for n in names]
                times.append(stamp)
                pos.append(np.asarray(msg.position, np.float64)[idx])
                has_vel = has_vel and len(msg.velocity) == len(msg.name)
                has_eff = has_eff and len(msg.effort) == len(msg.name)
                vel.append(np.asarray(msg.velocity, np.float64)[idx] if has_vel else None)
                eff.append(np.asarray(msg.effort, np.float64)[idx] if has_eff else None)
            t = np.asarray(times, np.int64)
            full = np.full((len(t), dof), np.nan)
            full[:, cols] = np.asarray(pos)
            if arm.gripper is not None:  # measured finger (m) -> normalized opening [0, 1]
                full[:, cols[-1]] = arm.gripper.normalize_finger(full[:, cols[-1]])
            full_vel = full_eff = None
            if has_vel:
                full_vel = np.full((len(t), dof), np.nan)
                full_vel[:, cols] = np.asarray(vel)
                if arm.gripper is not None:
                    full_vel[:, cols[-1]] = arm.gripper.normalize_finger_velocity(full_vel[:, cols[-1]])
            if has_eff:
                full_eff = np.full((len(t), dof), np.nan)
                full_eff[:, cols] = np.asarray(eff)
            order = np.argsort(t, kind='stable')
            out[arm.side] = (
                t[order], full[order],
                None if full_vel is None else full_vel[order],
                None if full_eff is None else full_eff[order],
            )
        return out

    def read_actions(self) -> tuple[np.ndarray, np.ndarray]:
        conn = self.action_conn
        dof = self.cfg.dof
        names = list(self.cfg.joint_names)
        times: list[int] = []
        values: list[np.ndarray] = []
        chunks: list[tuple[int, np.ndarray, int]] = []
        for stamp, data in self._messages(conn):
            msg = self.typestore.deserialize_cdr(data, conn.msgtype)
            if conn.msgtype == 'std_msgs/msg/Float64MultiArray':
                vec = np.asarray(msg.data, np.float64)
                if vec.shape != (dof,):
                    raise DatasetError(
                        f'{self.bag}: {conn.topic!r} carries {vec.size} values, expected {dof} (joint_names)')
            elif conn.msgtype == 'sensor_msgs/msg/JointState':
                vec = self._by_name(conn.topic, list(msg.name), np.asarray(msg.position, np.float64), names)
            elif conn.msgtype == 'trajectory_msgs/msg/JointTrajectory':
                if not msg.points:
                    continue
                vec = self._by_name(conn.topic, list(msg.joint_names), np.asarray(msg.points[0].positions), names)
            elif conn.msgtype == 'cosmos_policy_ros/msg/ActionChunk':
                positions = np.asarray(msg.positions, np.float64).reshape(msg.horizon, msg.dof)
                cols = [list(msg.joint_names).index(n) if n in msg.joint_names else -1 for n in names]
                if min(cols) < 0:
                    raise DatasetError(f'{self.bag}: ActionChunk on {conn.topic!r} lacks joints of joint_names')
                period = msg.control_period.sec * 10**9 + msg.control_period.nanosec
                chunks.append((msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec, positions[:, cols], period))
                continue
            else:
                raise DatasetError(f'{self.bag}: action topic {conn.topic!r} has unsupported type {conn.msgtype}')
            times.append(stamp)
            values.append(vec)
        if chunks:
            return _chunk_targets(chunks)
        t = np.asarray(times, np.int64)
        order = np.argsort(t, kind='stable')
        return t[order], np.asarray(values).reshape(len(t), dof)[order]

    def _by_name(self, topic: str, have: list[str], values: np.ndarray, want: list[str]) -> np.ndarray:
        lookup = {n: i for i, n in enumerate(have)}
        missing = [n for n in want if n not in lookup]
        if missing:
            raise DatasetError(f'{self.bag}: action message on {topic!r} lacks joints {missing}')
        return values[[lookup[n] for n in want]]

    def image_times(self) -> dict[str, np.ndarray]:
        return {
            cam: np.asarray([stamp for _, stamp, _ in self.reader.messages(connections=[conn])], np.int64)
            for cam, conn in self.camera_conns.items()
        }

    def frames(self, cam: str, wanted: set[int]) -> Iterable[tuple[int, np.ndarray]]:
        """(index, RGB frame) for the wanted frames; the index counts messages in reading
        order, the order of image_times(). Only wanted frames are decoded or kept."""
        conn = self.camera_conns[cam]
        for index, (_, _, data) in enumerate(self.reader.messages(connections=[conn])):
            if index in wanted:
                yield index, _image_to_rgb(self.typestore.deserialize_cdr(data, conn.msgtype), conn.msgtype)


