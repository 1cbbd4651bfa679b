"""chunk_executor_node with real rclpy in one process: clamps, NaN, e-stop, starvation."""
import math
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from std_srvs.srv import SetBool  # noqa: E402

from cosmos_policy_ros.nodes.messages import chunk_to_msg  # noqa: E402
from cosmos_policy_ros.msg import ActionChunk as ActionChunkMsg  # noqa: E402
from cosmos_policy_ros.msg import EpisodeEvent  # noqa: E402
from cosmos_policy_ros.nodes.chunk_executor_node import make_executor_node  # noqa: E402
from cosmos_policy_ros.types import ActionChunk  # noqa: E402
from ros_harness import Harness, params  # noqa: E402

ARM = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate"]
START = np.array([0, -0.96, 1.16, 0, -0.3, 0, 0.5] * 2)


@pytest.fixture
def graph(rclpy_context, aloha_config):
    node = make_executor_node(context=rclpy_context, parameter_overrides=params(config_file=str(aloha_config.path)))
    h = Harness(rclpy_context, node, start=False)
    h.collect(Float64MultiArray, "executed_command", 100)
    h.collect(Float64MultiArray, "follower_left/commands/position", 100)
    h.chunk_pub = h.probe.create_publisher(ActionChunkMsg, "action_chunk", 10)
    h.event_pub = h.probe.create_publisher(EpisodeEvent, "episode_events", 10)
    pubs = {arm: h.probe.create_publisher(JointState, f"follower_{arm}/joint_states", 10) for arm in ("left", "right")}
    h.limits = aloha_config.raw["limits"]
    h.config = aloha_config

    def publish_state(q=START):
        for i, arm in enumerate(("left", "right")):
            js = JointState()
            js.name = ARM + ["left_finger"]
            grip = q[7 * i + 6]
            js.position = [float(v) for v in q[7 * i:7 * i + 6]] + [0.01844 + grip * (0.058 - 0.01844)]
            pubs[arm].publish(js)

    h.publish_state = publish_state
    timer = h.probe.create_timer(0.02, publish_state)
    # A chunk published before discovery matched the executor's subscription would be lost.
    h.wait_for_subscribers("action_chunk")
    h.wait_for_subscribers("episode_events")
    h.start()
    yield h
    timer.cancel()
    h.close()


def commands(h):
    return np.array([list(m.data) for m in h.messages("executed_command")])


def send_chunk(h, positions, chunk_id, stamp_ns=None):
    chunk = ActionChunk(stamp_ns=stamp_ns or h.now_ns(), chunk_id=chunk_id, joint_names=h.config.joint_names,
                        positions=np.asarray(positions, dtype=np.float64), control_period_s=0.02)
    h.chunk_pub.publish(chunk_to_msg(chunk))


def assert_safe(cmds, limits):
    lower, upper = np.array(limits["lower"]), np.array(limits["upper"])
    step = np.array(limits["max_step_per_tick"])
    assert np.all(np.isfinite(cmds))
    assert np.all(cmds >= lower - 1e-9) and np.all(cmds <= upper + 1e-9)
    assert np.all(np.abs(np.diff(cmds, axis=0)) <= step + 1e-9)


def test_holds_measured_pose_without_chunks_then_follows_a_chunk(graph):
    h = graph
    h.wait_for(lambda: len(h.messages("executed_command")) > 5, what="hold commands")
    np.testing.assert_allclose(commands(h)[-1], START, atol=1e-6)
    left = h.messages("follower_left/commands/position")[-1]
    np.testing.assert_allclose(left.data, START[:7], atol=1e-6)

    target = START.copy()
    target[0] = 0.3  # waist moves 0.3 rad over the chunk
    positions = np.linspace(START, target, 50)
    h.clear("executed_command")
    send_chunk(h, positions, 1)
    h.wait_for(lambda: len(h.messages("executed_command")) > 60, timeout=10, what="chunk execution")
    cmds = commands(h)
    assert cmds[:, 0].max() > 0.25, "the chunk was not executed"
    assert_safe(cmds, h.limits)
    # Starvation: the chunk ended, the executor holds its last target.
    np.testing.assert_allclose(cmds[-1], cmds[-5], atol=1e-9)


def test_unsafe_chunks_are_clamped_or_refused(graph):
    h = graph
    h.wait_for(lambda: len(h.messages("executed_command")) > 3, what="start-up")
    bad = np.tile(START, (50, 1))
    bad[:, 1] = 5.0  # shoulder far beyond its 1.26 rad limit
    h.clear("executed_command")
    send_chunk(h, bad, 1)
    # 2.2 rad at 0.05 rad/tick: the shoulder reaches its limit after ~45 ticks, then stays.
    h.wait_for(lambda: len(h.messages("executed_command")) > 60 and commands(h)[:, 1].max() > 1.2,
               timeout=10, what=f"clamped execution ({h.nodes[1].executor_core.stats()})")
    cmds = commands(h)
    assert_safe(cmds, h.limits)
    assert cmds[:, 1].max() == pytest.approx(h.limits["upper"][1])  # pushed to the limit, never beyond

    nan = np.tile(START, (50, 1))
    nan[10, 3] = math.nan
    send_chunk(h, nan, 2)
    wrong = ActionChunkMsg()  # inconsistent message: positions do not match horizon * dof
    wrong.chunk_id, wrong.horizon, wrong.dof = 3, 50, 14
    wrong.joint_names = list(h.config.joint_names)
    wrong.positions = [0.0] * 10
    wrong.control_period.nanosec = 20_000_000
    h.chunk_pub.publish(wrong)
    time.sleep(0.5)
    cmds = commands(h)
    assert_safe(cmds, h.limits)
    stats = h.nodes[1].executor_core.stats()
    assert stats["rejected_nonfinite"] == 1 and stats["accepted"] == 1


def test_estop_holds_and_resume_has_no_jump(graph):
    h = graph
    h.wait_for(lambda: len(h.messages("executed_command")) > 3, what="start-up")
    client = h.probe.create_client(SetBool, "executor/enable")
    assert client.wait_for_service(timeout_sec=5.0)
    target = START.copy()
    target[2] = START[2] + 0.4
    send_chunk(h, np.linspace(START, target, 50), 1)
    time.sleep(0.3)
    future = client.call_async(SetBool.Request(data=False))
    h.wait_for(future.done, what="disable response")
    assert future.result().success
    time.sleep(0.3)  # ticks already queued before the disable may still arrive
    h.clear("executed_command")
    time.sleep(0.4)
    held = commands(h)
    assert len(held) > 10 and np.ptp(held, axis=0).max() == 0.0, "commands moved while disabled"
    send_chunk(h, np.linspace(START, target, 50), 2)  # refused while disabled
    start_event = EpisodeEvent()
    start_event.event, start_event.episode_id = EpisodeEvent.START, "next"
    h.event_pub.publish(start_event)  # a new episode must not lift the e-stop
    time.sleep(0.3)
    send_chunk(h, np.linspace(START, target, 50), 3)
    time.sleep(0.3)
    assert np.ptp(commands(h), axis=0).max() == 0.0
    assert not h.nodes[1].executor_core.enabled
    future = client.call_async(SetBool.Request(data=True))
    h.wait_for(future.done, what="enable response")
    h.clear("executed_command")
    send_chunk(h, np.linspace(START, target, 50), 4)
    h.wait_for(lambda: len(h.messages("executed_command")) > 40, what="resumed execution")
    cmds = commands(h)
    assert_safe(cmds, h.limits)
    assert cmds[-1, 2] > held[-1, 2] + 0.05, "did not resume"
