"""Conversions between the package's ROS messages and its plain types.

Imports ROS message modules lazily so plain-Python users of the rest of the package
never need rclpy.
"""
from __future__ import annotations

import math

import numpy as np

from cosmos_policy_ros.types import ActionChunk


def stamp_to_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(stamp_ns: int, out=None):
    from builtin_interfaces.msg import Time

    out = out if out is not None else Time()
    out.sec, out.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return out


def seconds_to_duration(seconds: float, out=None):
    from builtin_interfaces.msg import Duration

    out = out if out is not None else Duration()
    total_ns = int(round(seconds * 1e9))
    out.sec, out.nanosec = divmod(total_ns, 1_000_000_000)
    return out


def duration_to_seconds(duration) -> float:
    return duration.sec + duration.nanosec * 1e-9


def chunk_to_msg(chunk: ActionChunk, frame_id: str = ""):
    from cosmos_policy_ros.msg import ActionChunk as ActionChunkMsg

    msg = ActionChunkMsg()
    msg.header.stamp = ns_to_stamp(chunk.stamp_ns)
    msg.header.frame_id = frame_id
    msg.chunk_id = int(chunk.chunk_id)
    msg.joint_names = list(chunk.joint_names)
    msg.horizon = chunk.horizon
    msg.dof = chunk.dof
    msg.control_period = seconds_to_duration(chunk.control_period_s)
    msg.positions = np.ascontiguousarray(chunk.positions, dtype=np.float64).ravel()
    msg.predicted_value = float("nan") if chunk.predicted_value is None else float(chunk.predicted_value)
    return msg


def msg_to_chunk(msg) -> ActionChunk:
    """Raises ValueError with the reason for an inconsistent message."""
    horizon, dof = int(msg.horizon), int(msg.dof)
    positions = np.asarray(msg.positions, dtype=np.float64)
    if horizon <= 0 or dof <= 0:
        raise ValueError(f"ActionChunk {msg.chunk_id}: horizon {horizon} and dof {dof} must be > 0")
    if positions.size != horizon * dof:
        raise ValueError(f"ActionChunk {msg.chunk_id}: {positions.size} positions != horizon*dof = {horizon}*{dof}")
    if len(msg.joint_names) != dof:
        raise ValueError(f"ActionChunk {msg.chunk_id}: {len(msg.joint_names)} joint names for dof {dof}")
    period = duration_to_seconds(msg.control_period)
    if not period > 0:
        raise ValueError(f"ActionChunk {msg.chunk_id}: control_period must be > 0")
    value = float(msg.predicted_value)
    return ActionChunk(
        stamp_ns=stamp_to_ns(msg.header.stamp), chunk_id=int(msg.chunk_id), joint_names=tuple(msg.joint_names),
        positions=positions.reshape(horizon, dof), control_period_s=period,
        predicted_value=None if math.isnan(value) else value,
    )


def rgb_to_image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str = ""):
    from sensor_msgs.msg import Image

    from cosmos_policy_ros.control.images import rgb_to_image_fields

    msg = Image()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    for key, value in rgb_to_image_fields(rgb).items():
        setattr(msg, key, value)
    return msg


