"""recorder_node across processes: killed with SIGINT/SIGTERM mid-episode, its bag is
closed and holds every message it received before the signal."""
import signal
import time

import pytest

pytest.importorskip("rclpy")
from std_msgs.msg import Float64MultiArray  # noqa: E402

from cosmos_policy_ros.nodes.launcher import Graph, ros_env  # noqa: E402
from cosmos_policy_ros.msg import EpisodeEvent  # noqa: E402
from cosmos_policy_ros.recording import is_bag_closed  # noqa: E402


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_recorder_node_keeps_everything_when_signalled(tmp_path, aloha_config, sig):
    import os

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosbags.highlevel import AnyReader

    env = ros_env()
    out = tmp_path / "bags"
    context = rclpy.context.Context()
    saved = os.environ["ROS_DOMAIN_ID"]
    os.environ["ROS_DOMAIN_ID"] = env["ROS_DOMAIN_ID"]  # this process joins the recorder's private domain
    try:
        rclpy.init(context=context)
        node = rclpy.create_node("feeder", context=context)
        qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        events = node.create_publisher(EpisodeEvent, "episode_events", qos)
        commands = node.create_publisher(Float64MultiArray, "executed_command", qos)
        with Graph(env, tmp_path / "logs") as graph:
            graph.start("recorder_node", {"config_file": str(aloha_config.path), "output_dir": str(out)})
            deadline = time.monotonic() + 60
            while (commands.get_subscription_count() == 0 or events.get_subscription_count() == 0) \
                    and time.monotonic() < deadline:
                time.sleep(0.1)
            start = EpisodeEvent()
            start.event, start.episode_id = EpisodeEvent.START, "killed_episode"
            events.publish(start)
            log = tmp_path / "logs" / "recorder_node.log"
            deadline = time.monotonic() + 30
            while "recording into" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert (out / "killed_episode").exists(), log.read_text()
            sent = 300
            for i in range(sent):
                commands.publish(Float64MultiArray(data=[float(i)] * 14))
                time.sleep(0.002)
            time.sleep(1.0)  # delivered (reliable), episode still open
            code = graph.stop("recorder_node", sig=sig, timeout_s=20)
        assert code is not None
        bag = out / "killed_episode"
        assert is_bag_closed(bag), "the signal handler did not close the bag"
        with AnyReader([bag]) as reader:
            connections = [c for c in reader.connections if c.topic == "/executed_command"]
            values = [reader.deserialize(raw, c.msgtype).data[0] for c, _, raw in reader.messages(connections)]
        assert values == [float(i) for i in range(sent)]
    finally:
        os.environ["ROS_DOMAIN_ID"] = saved
        rclpy.try_shutdown(context=context)
