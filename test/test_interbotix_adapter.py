"""The Interbotix output adapter against a message package with interbotix_xs_msgs' field
layout, built here with rosidl (the real one is not on the package registry)."""
import json
import os
import subprocess
import sys
import textwrap

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
rosidl_generate_interfaces(${PROJECT_NAME} "msg/JointGroupCommand.msg" "msg/JointSingleCommand.msg")
ament_package()
"""

PROBE = textwrap.dedent('''
    import json, sys, time
    import rclpy
    from sensor_msgs.msg import JointState
    from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
    from cosmos_policy_ros.nodes.messages import chunk_to_msg
    from cosmos_policy_ros.msg import ActionChunk as ActionChunkMsg
    from cosmos_policy_ros.types import ActionChunk
    import numpy as np

    rclpy.init()
    node = rclpy.create_node("probe")
    got = {"group": [], "single": []}
    for arm in ("left", "right"):
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
            js = JointState(); js.name = names; js.position = [0.0, -0.5, 0.5, 0.0, 0.0, 0.0, 0.05800]
            pub.publish(js)
        # Send the chunk once the executor streams commands and listens for chunks.
        if not sent and len(got["group"]) > 10 and chunk_pub.get_subscription_count() > 0:
            q = np.array([0.0, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0] * 2)  # grippers closed
            chunk = ActionChunk(node.get_clock().now().nanoseconds, 1, tuple(joint_names), np.tile(q, (150, 1)), 0.02)  # 3 s: slack for a loaded machine
            chunk_pub.publish(chunk_to_msg(chunk)); sent = True
        left = [cmd for arm, name, cmd in got["single"] if arm == "left"]
        if sent and left and min(left) < -0.62:  # gripper reached closed
            break
        rclpy.spin_once(node, timeout_sec=0.02)
    print(json.dumps(got))
''')


@pytest.fixture(scope="module")
def interbotix_msgs():
    pkg = REPO / "build" / "test_interbotix_xs_msgs_src"
    (pkg / "msg").mkdir(parents=True, exist_ok=True)
    (pkg / "package.xml").write_text(PACKAGE_XML)
    (pkg / "CMakeLists.txt").write_text(CMAKE)
    (pkg / "msg" / "JointGroupCommand.msg").write_text("string name\nfloat32[] cmd\n")
    (pkg / "msg" / "JointSingleCommand.msg").write_text("string name\nfloat32 cmd\n")
    install = REPO / "build" / "test_interbotix_xs_msgs"
    env = dict(os.environ, PACKAGE_DIR=str(pkg), INSTALL_DIR=str(install))
    venv = os.path.dirname(os.path.dirname(sys.executable))
    subprocess.run([str(REPO / "scripts" / "build_msgs.sh"), venv], check=True, env=env, capture_output=True)
    site = next((install / "lib").glob("python3*/site-packages"))
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
            "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(install / "lib"), os.environ.get("LD_LIBRARY_PATH")]))}


def test_interbotix_adapter_sends_arm_group_and_gripper_motor_commands(tmp_path, aloha_config, interbotix_msgs):
    from cosmos_policy_ros.nodes.launcher import Graph, ros_env

    raw = dict(aloha_config.raw, output={"adapter": "interbotix"})
    config = tmp_path / "aloha_interbotix.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = dict(ros_env(), **interbotix_msgs)
    with Graph(env, tmp_path / "logs") as graph:
        graph.start("chunk_executor_node", {"config_file": str(config)})
        probe = subprocess.run([sys.executable, "-c", PROBE, json.dumps(list(aloha_config.joint_names))],
                               env=env, capture_output=True, text=True, timeout=120)
        log = (tmp_path / "logs" / "chunk_executor_node.log").read_text()
    assert probe.returncode == 0, probe.stderr[-2000:]
    got = json.loads(probe.stdout.strip().splitlines()[-1])
    assert "'interbotix' adapter" in log
    left_groups = [g for g in got["group"] if g[0] == "left"]
    assert left_groups and all(name == "arm" and len(cmd) == 6 for _, name, cmd in left_groups)
    assert left_groups[0][2][1] == pytest.approx(-0.5, abs=1e-5), left_groups[:3]
    grippers = [cmd for arm, name, cmd in got["single"] if arm == "left" and name == "gripper"]
    # Held open at first (1.4910 rad motor position), then closed at <= 0.1 normalized per tick.
    assert grippers[0] == pytest.approx(1.4910, abs=1e-4)
    assert min(grippers) == pytest.approx(-0.6213, abs=1e-4)
    steps = [abs(b - a) for a, b in zip(grippers, grippers[1:])]
    assert max(steps) <= 0.1 * (1.4910 + 0.6213) + 1e-4
