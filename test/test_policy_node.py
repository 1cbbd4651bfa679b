"""policy_node with real rclpy in one process: observation -> ActionChunk, and bad input."""
import time

import h5py
import numpy as np
import pytest

pytest.importorskip("rclpy")
from sensor_msgs.msg import CompressedImage, Image, JointState  # noqa: E402

from cosmos_policy_ros.control.images import image_message_to_rgb, rgb_to_jpeg  # noqa: E402
from cosmos_policy_ros.nodes.messages import msg_to_chunk, ns_to_stamp, rgb_to_image_msg  # noqa: E402
from cosmos_policy_ros.msg import ActionChunk as ActionChunkMsg  # noqa: E402
from cosmos_policy_ros.nodes.policy_node import make_policy_node  # noqa: E402
from ros_harness import Harness, params  # noqa: E402

ARM = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "left_finger"]
CAMS = ["cam_high", "cam_left_wrist", "cam_right_wrist"]


@pytest.fixture
def episode(tmp_path):
    actions = np.tile(np.array([0, -0.96, 1.16, 0, -0.3, 0, 0.5] * 2), (200, 1))
    actions[:, 0] = np.linspace(0, 0.5, 200)
    path = tmp_path / "episode_0.hdf5"
    with h5py.File(path, "w") as f:
        f["action"] = actions
        f.attrs["fps"] = 50
    return path, actions


@pytest.fixture
def replay_config(tmp_path, episode, aloha_config):
    import yaml

    raw = dict(aloha_config.raw)
    raw["policy"] = dict(raw["policy"], type="replay", replay_episode=str(episode[0]))
    path = tmp_path / "aloha_replay.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def publish_observation(h, stamp_ns, image=None, joints=None):
    rgb = np.full((24, 32, 3), 90, np.uint8)
    for cam, pub in h.cams.items():
        msg = image(cam, stamp_ns) if image else rgb_to_image_msg(rgb, stamp_ns)
        pub.publish(msg)
    for arm, pub in h.joints.items():
        js = JointState()
        js.header.stamp = ns_to_stamp(stamp_ns)
        js.name = ARM
        js.position = joints if joints is not None else [0.0, -0.96, 1.16, 0.0, -0.3, 0.0, 0.04]
        pub.publish(js)


def make_graph(rclpy_context, config_path):
    node = make_policy_node(context=rclpy_context, parameter_overrides=params(config_file=str(config_path)))
    h = Harness(rclpy_context, node)
    h.collect(ActionChunkMsg, "action_chunk", 10)
    h.cams = {c: h.probe.create_publisher(Image, f"{c}/image_raw", 10) for c in CAMS}
    h.joints = {a: h.probe.create_publisher(JointState, f"follower_{a}/joint_states", 10) for a in ("left", "right")}
    h.node = node
    return h


def test_observation_to_action_chunk(rclpy_context, replay_config, episode):
    h = make_graph(rclpy_context, replay_config)
    try:
        stamp = h.now_ns()
        deadline = time.monotonic() + 10
        while not h.messages("action_chunk") and time.monotonic() < deadline:
            publish_observation(h, h.now_ns())
            time.sleep(0.05)
        assert h.messages("action_chunk"), "no chunk published"
        chunk = msg_to_chunk(h.messages("action_chunk")[0])
        assert chunk.joint_names == h.node.config.joint_names and chunk.positions.shape == (50, 14)
        assert chunk.stamp_ns >= stamp and chunk.control_period_s == pytest.approx(0.02)
        np.testing.assert_allclose(chunk.positions, episode[1][:50])  # first chunk = start of the episode
    finally:
        h.close()


def test_malformed_and_stale_input_refused_node_keeps_running(rclpy_context, replay_config):
    h = make_graph(rclpy_context, replay_config)
    try:
        def bad_step(cam, stamp_ns):
            msg = rgb_to_image_msg(np.zeros((24, 32, 3), np.uint8), stamp_ns)
            msg.step = 10  # less than width * 3
            return msg

        def unknown_encoding(cam, stamp_ns):
            msg = rgb_to_image_msg(np.zeros((24, 32, 3), np.uint8), stamp_ns)
            msg.encoding = "yuv422_yuy2"
            return msg

        def truncated(cam, stamp_ns):
            msg = rgb_to_image_msg(np.zeros((24, 32, 3), np.uint8), stamp_ns)
            msg.data = bytes(msg.data)[:100]
            return msg

        for make in (bad_step, unknown_encoding, truncated):
            for _ in range(5):
                publish_observation(h, h.now_ns(), image=make)
                time.sleep(0.03)
        time.sleep(0.3)
        assert not h.messages("action_chunk")
        assert h.node.errors["image:cam_high"] >= 3
        # Joint state missing a configured joint: refused with a count, no crash.
        publish_observation(h, h.now_ns(), joints=[0.0, 1.0])
        time.sleep(0.2)
        assert h.node.errors["joint_state:left"] >= 1
        # Stale: valid data stamped 5 s ago never makes an observation.
        for _ in range(5):
            publish_observation(h, h.now_ns() - 5_000_000_000)
            time.sleep(0.03)
        time.sleep(0.2)
        assert not h.messages("action_chunk") and h.node.assembler.refusals["stale"] > 0
        # The node is still alive: fresh, valid data produces a chunk.
        deadline = time.monotonic() + 10
        while not h.messages("action_chunk") and time.monotonic() < deadline:
            publish_observation(h, h.now_ns())
            time.sleep(0.05)
        assert h.messages("action_chunk"), "node did not recover after bad input"
    finally:
        h.close()


def test_compressed_transport(rclpy_context, replay_config, tmp_path):
    import yaml

    raw = yaml.safe_load(replay_config.read_text())
    raw["camera_transport"] = "compressed"
    path = tmp_path / "compressed.yaml"
    path.write_text(yaml.safe_dump(raw))
    node = make_policy_node(context=rclpy_context, parameter_overrides=params(config_file=str(path)))
    h = Harness(rclpy_context, node)
    try:
        h.collect(ActionChunkMsg, "action_chunk", 10)
        pubs = {c: h.probe.create_publisher(CompressedImage, f"{c}/image_raw/compressed", 10) for c in CAMS}
        joints = {a: h.probe.create_publisher(JointState, f"follower_{a}/joint_states", 10) for a in ("left", "right")}
        jpeg = rgb_to_jpeg(np.full((24, 32, 3), 200, np.uint8))
        deadline = time.monotonic() + 10
        while not h.messages("action_chunk") and time.monotonic() < deadline:
            stamp = ns_to_stamp(h.now_ns())
            for pub in pubs.values():
                msg = CompressedImage()
                msg.header.stamp, msg.format, msg.data = stamp, "jpeg", jpeg
                pub.publish(msg)
            for pub in joints.values():
                js = JointState()
                js.header.stamp, js.name, js.position = stamp, ARM, [0.0] * 6 + [0.03]
                pub.publish(js)
            time.sleep(0.05)
        assert h.messages("action_chunk")
        image = image_message_to_rgb(node.assembler._images["cam_high"].value)
        assert image.shape == (24, 32, 3) and abs(int(image.mean()) - 200) <= 3
    finally:
        h.close()


def test_planning_deadline_longer_than_chunk_age_is_refused_at_start(rclpy_context, replay_config, tmp_path):
    import yaml

    from cosmos_policy_ros.config import ConfigError

    raw = yaml.safe_load(replay_config.read_text())
    raw["planning"] = dict(raw["planning"], enabled=True, deadline_s=10.0)
    raw["execution"] = dict(raw["execution"], max_chunk_age_s=2.0)
    path = tmp_path / "bad_deadline.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="deadline_s .* must be below"):
        make_policy_node(context=rclpy_context, parameter_overrides=params(config_file=str(path)))
