"""The Interbotix output adapter against a message package with interbotix_xs_msgs' field
layout, built here with rosidl (the real one is not on the package registry), and a probe
standing in for the Interbotix driver (xs_sdk): it subscribes what the driver subscribes and,
when asked to, serves `<ns>/set_operating_modes` as the driver does."""
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

pytest.importorskip("rclpy")
from conftest import REPO  # noqa: E402

PACKAGE_XML = """<?xml version="1.0"?>
<package format="3">
  <name>interbotix_xs_msgs</name><version>0.0.1</version>
  <description>Stand-in with the field layout of Interbotix's commands (tests only)</description>
  <maintainer email="tests@cosmos-policy-ros.dev">tests</maintainer><license>Apache-2.0</license>
  <buildtool_depend>ament_cmake</buildtool_depend>
  <buildtool_depend>rosidl_default_generators</buildtool_depend>
  <exec_depend>rosidl_default_runtime</exec_depend>
  <member_of_group>rosidl_interface_packages</member_of_group>
  <export><build_type>ament_cmake</build_type></export>
</package>
"""
CMAKE = """cmake_minimum_required(VERSION 3.16)
project(interbotix_xs_msgs)
find_package(ament_cmake REQUIRED)
find_package(rosidl_default_generators REQUIRED)
rosidl_generate_interfaces(${PROJECT_NAME} "msg/JointGroupCommand.msg" "msg/JointSingleCommand.msg"
                           "srv/OperatingModes.srv")
ament_package()
"""
# Field layout of interbotix_ros_core's interbotix_xs_msgs (branch humble): the commands and
# the service xs_sdk offers as <robot_name>/set_operating_modes (empty response).
JOINT_GROUP_COMMAND = "string name\nfloat32[] cmd\n"
JOINT_SINGLE_COMMAND = "string name\nfloat32 cmd\n"
OPERATING_MODES = ("string cmd_type\nstring name\nstring mode\nstring profile_type\n"
                   "int32 profile_velocity\nint32 profile_acceleration\n---\n")

PROBE = textwrap.dedent('''
    import json, sys, time
    import rclpy
    from sensor_msgs.msg import JointState
    from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
    from interbotix_xs_msgs.srv import OperatingModes
    from cosmos_policy_ros.nodes.messages import chunk_to_msg
    from cosmos_policy_ros.msg import ActionChunk as ActionChunkMsg
    from cosmos_policy_ros.types import ActionChunk
    import numpy as np

    rclpy.init()
    node = rclpy.create_node("probe")
    got = {"group": [], "single": [], "modes": []}
    serve_modes = sys.argv[2] == "serve_modes"

    def on_mode(arm):
        def answer(request, response):
            # gripper commands received before this call: must be none
            got["modes"].append([arm, request.cmd_type, request.name, request.mode, request.profile_type,
                                 request.profile_velocity, request.profile_acceleration, len(got["single"])])
            return response
        return answer

    for arm in ("left", "right"):
        if serve_modes:
            node.create_service(OperatingModes, f"follower_{arm}/set_operating_modes", on_mode(arm))
        node.create_subscription(JointGroupCommand, f"follower_{arm}/commands/joint_group",
                                 lambda m, a=arm: got["group"].append([a, m.name, list(m.cmd)]), 50)
        node.create_subscription(JointSingleCommand, f"follower_{arm}/commands/joint_single",
                                 lambda m, a=arm: got["single"].append([a, m.name, m.cmd]), 50)
    state_pubs = {a: node.create_publisher(JointState, f"follower_{a}/joint_states", 10) for a in ("left", "right")}
    chunk_pub = node.create_publisher(ActionChunkMsg, "action_chunk", 10)
    names = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "left_finger"]
    joint_names = json.loads(sys.argv[1])
    start = time.monotonic()
    sent = False
    while time.monotonic() - start < 60.0:
        for pub in state_pubs.values():
            js = JointState(); js.name = names; js.position = [0.0, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0579]
            pub.publish(js)
        # Send the chunk once the executor streams commands and listens for chunks.
        if not sent and len(got["group"]) > 10 and chunk_pub.get_subscription_count() > 0:
            q = np.array([0.0, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0] * 2)  # grippers closed
            chunk = ActionChunk(node.get_clock().now().nanoseconds, 1, tuple(joint_names), np.tile(q, (150, 1)), 0.02)  # 3 s: slack for a loaded machine
            chunk_pub.publish(chunk_to_msg(chunk)); sent = True
        left = [cmd for arm, name, cmd in got["single"] if arm == "left"]
        if sent and left and min(left) < 0.6198:  # gripper reached closed (0.6197 rad)
            break
        rclpy.spin_once(node, timeout_sec=0.02)
    print(json.dumps(got))
''')


@pytest.fixture(scope="module")
def interbotix_msgs():
    pkg = REPO / "build" / "test_interbotix_xs_msgs_src"
    (pkg / "msg").mkdir(parents=True, exist_ok=True)
    (pkg / "srv").mkdir(parents=True, exist_ok=True)
    (pkg / "package.xml").write_text(PACKAGE_XML)
    (pkg / "CMakeLists.txt").write_text(CMAKE)
    (pkg / "msg" / "JointGroupCommand.msg").write_text(JOINT_GROUP_COMMAND)
    (pkg / "msg" / "JointSingleCommand.msg").write_text(JOINT_SINGLE_COMMAND)
    (pkg / "srv" / "OperatingModes.srv").write_text(OPERATING_MODES)
    install = REPO / "build" / "test_interbotix_xs_msgs"
    env = dict(os.environ, PACKAGE_DIR=str(pkg), INSTALL_DIR=str(install))
    venv = os.path.dirname(os.path.dirname(sys.executable))
    subprocess.run([str(REPO / "scripts" / "build_msgs.sh"), venv], check=True, env=env, capture_output=True)
    site = next((install / "lib").glob("python3*/site-packages"))
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
            "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(install / "lib"), os.environ.get("LD_LIBRARY_PATH")]))}


def _real_config(tmp_path, **output):
    """config/aloha_real.yaml with output fields overridden."""
    raw = yaml.safe_load((REPO / "config" / "aloha_real.yaml").read_text())
    raw["output"].update(output)
    path = tmp_path / "aloha_real.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, raw


def test_real_robot_sets_gripper_mode_then_sends_arm_group_and_gripper_motor_commands(tmp_path, interbotix_msgs):
    """The real-robot config's defaults on a driver that answers set_operating_modes: each
    gripper is put in current_based_position before its first command, then the arm goes out
    as JointGroupCommand "arm" and the gripper as motor radians in Trossen's ROS 2 range
    (closed 0.6197, open 1.6214 rad)."""
    from cosmos_policy_ros.nodes.launcher import Graph, ros_env

    # Slack for the probe's start-up on a loaded machine; the default is 10 s.
    config, raw = _real_config(tmp_path, interbotix_service_timeout_s=60.0)
    assert raw["output"]["adapter"] == "interbotix" and raw["output"]["interbotix_gripper_mode"] == "set"
    env = dict(ros_env(), **interbotix_msgs)
    with Graph(env, tmp_path / "logs") as graph:
        graph.start("chunk_executor_node", {"config_file": str(config)})
        probe = subprocess.run([sys.executable, "-c", PROBE, json.dumps(raw["joint_names"]), "serve_modes"],
                               env=env, capture_output=True, text=True, timeout=150)
        log = (tmp_path / "logs" / "chunk_executor_node.log").read_text()
    assert probe.returncode == 0, probe.stderr[-2000:]
    got = json.loads(probe.stdout.strip().splitlines()[-1])
    assert "grippers set to current_based_position" in log, log[-2000:]
    assert "'interbotix' adapter" in log
    # One call per arm with the fields Trossen's setup_follower_bot sends, before any gripper command.
    assert sorted(m[:7] for m in got["modes"]) == [
        [arm, "single", "gripper", "current_based_position", "velocity", 0, 0] for arm in ("left", "right")]
    assert all(m[7] == 0 for m in got["modes"])
    left_groups = [g for g in got["group"] if g[0] == "left"]
    assert left_groups and all(name == "arm" and len(cmd) == 6 for _, name, cmd in left_groups)
    assert left_groups[0][2][1] == pytest.approx(-0.5, abs=1e-5), left_groups[:3]
    grippers = [cmd for arm, name, cmd in got["single"] if arm == "left" and name == "gripper"]
    # Held open at first (finger 0.0579 m -> motor 1.6214 rad), then closed at <= 0.1 normalized per tick.
    assert grippers[0] == pytest.approx(1.6214, abs=1e-4)
    assert min(grippers) == pytest.approx(0.6197, abs=1e-4)
    steps = [abs(b - a) for a, b in zip(grippers, grippers[1:])]
    assert max(steps) <= 0.1 * (1.6214 - 0.6197) + 1e-4


def test_real_robot_refuses_to_start_when_the_driver_does_not_answer(tmp_path, interbotix_msgs):
    """No set_operating_modes service: the executor exits at start-up (code 2, no command
    sent) with a message naming the service and both ways out."""
    from cosmos_policy_ros.nodes.launcher import Graph, ros_env

    config, _ = _real_config(tmp_path, interbotix_service_timeout_s=1.0)
    with Graph(dict(ros_env(), **interbotix_msgs), tmp_path / "logs") as graph:
        graph.start("chunk_executor_node", {"config_file": str(config)})
        code = graph.wait("chunk_executor_node", timeout_s=90.0)
        log = (tmp_path / "logs" / "chunk_executor_node.log").read_text()
    assert code == 2, log[-2000:]
    assert "refusing to start" in log and "follower_left/set_operating_modes not available" in log, log[-2000:]
    assert "ros2 service call /follower_left/set_operating_modes interbotix_xs_msgs/srv/OperatingModes" in log
    assert "output.interbotix_gripper_mode: assume" in log
    assert "executing 14 joints" not in log


def test_assume_mode_skips_the_service(tmp_path, interbotix_msgs):
    """interbotix_gripper_mode: assume starts without the service (the driver's mode config
    is trusted) and says so."""
    from cosmos_policy_ros.nodes.launcher import Graph, ros_env

    config, _ = _real_config(tmp_path, interbotix_gripper_mode="assume", interbotix_service_timeout_s=1.0)
    with Graph(dict(ros_env(), **interbotix_msgs), tmp_path / "logs") as graph:
        graph.start("chunk_executor_node", {"config_file": str(config)})
        log_path = tmp_path / "logs" / "chunk_executor_node.log"
        deadline = time.monotonic() + 90.0
        while time.monotonic() < deadline and "executing 14 joints" not in log_path.read_text():
            assert graph.wait("chunk_executor_node", timeout_s=0.5) is None, log_path.read_text()[-2000:]
        log = log_path.read_text()
    assert "executing 14 joints" in log and "through the 'interbotix' adapter" in log, log[-2000:]
    assert "interbotix_gripper_mode is 'assume'" in log
