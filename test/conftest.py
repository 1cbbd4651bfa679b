"""Shared fixtures. ROS tests get a private DDS domain so parallel runs never cross-talk."""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
# One domain per pytest process; subprocess graphs get their own via launcher.ros_env().
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(101, 200)))


@pytest.fixture(scope="session")
def aloha_config():
    from cosmos_policy_ros.config import load_config

    return load_config(REPO / "config" / "aloha.yaml")


@pytest.fixture(scope="session")
def single_arm_config():
    from cosmos_policy_ros.config import load_config

    return load_config(REPO / "config" / "single_arm_7dof.yaml")


@pytest.fixture
def rclpy_context():
    """rclpy initialised for one test, shut down after."""
    import rclpy

    context = rclpy.context.Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)
