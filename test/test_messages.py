"""The package's messages: conversions, and a publish/subscribe round trip with rclpy."""
import math
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
from cosmos_policy_ros.msg import ActionChunk, EpisodeEvent, PlanRequest, PlanResult  # noqa: E402
from ros_harness import Harness  # noqa: E402

from cosmos_policy_ros.control.images import image_message_to_rgb  # noqa: E402
from cosmos_policy_ros.nodes.messages import (  # noqa: E402
    chunk_to_msg,
    msg_to_chunk,
    ns_to_stamp,
    rgb_to_image_msg,
    stamp_to_ns,
)
from cosmos_policy_ros.types import ActionChunk as Chunk  # noqa: E402

NAMES = tuple(f"j{i}" for i in range(14))


def make_chunk(value=0.7):
    positions = np.random.default_rng(1).normal(size=(50, 14))
    return Chunk(stamp_ns=1_700_000_000_123_456_789, chunk_id=42, joint_names=NAMES, positions=positions,
                 control_period_s=0.04, predicted_value=value)


def test_chunk_conversion_is_exact_and_validates():
    chunk = make_chunk()
    back = msg_to_chunk(chunk_to_msg(chunk))
    assert back.stamp_ns == chunk.stamp_ns and back.chunk_id == 42 and back.joint_names == NAMES
    np.testing.assert_array_equal(back.positions, chunk.positions)
    assert back.control_period_s == pytest.approx(0.04) and back.predicted_value == pytest.approx(0.7)
    assert msg_to_chunk(chunk_to_msg(make_chunk(None))).predicted_value is None
    bad = chunk_to_msg(chunk)
    bad.horizon = 49
    with pytest.raises(ValueError, match="positions != horizon"):
        msg_to_chunk(bad)
    bad = chunk_to_msg(chunk)
    bad.joint_names = bad.joint_names[:3]
    with pytest.raises(ValueError, match="joint names for dof"):
        msg_to_chunk(bad)
    assert stamp_to_ns(ns_to_stamp(chunk.stamp_ns)) == chunk.stamp_ns


def test_publish_subscribe_round_trip(rclpy_context):
    h = Harness(rclpy_context)
    try:
        pubs = {}
        for msg_type, topic in ((ActionChunk, "rt/chunk"), (PlanRequest, "rt/request"), (PlanResult, "rt/result"),
                                (EpisodeEvent, "rt/event")):
            h.collect(msg_type, topic)
            pubs[topic] = h.probe.create_publisher(msg_type, topic, 10)
        chunk = make_chunk()
        request = PlanRequest()
        request.request_id, request.task = 7, "transfer the cube"
        request.camera_names = ["cam_high"]
        request.images = [rgb_to_image_msg(np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3), chunk.stamp_ns)]
        request.joint_positions = list(np.linspace(0, 1, 14))
        request.candidates = [chunk_to_msg(chunk), chunk_to_msg(make_chunk(0.1))]
        result = PlanResult()
        result.request_id, result.candidate_values, result.chosen_index, result.ok = 7, [0.2, 0.9], 1, True
        event = EpisodeEvent()
        event.event, event.episode_id, event.has_outcome, event.success, event.score = EpisodeEvent.LABEL, "ep1", True, True, math.nan
        sent = {"rt/chunk": chunk_to_msg(chunk), "rt/request": request, "rt/result": result, "rt/event": event}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(h.messages(t) for t in sent):
            for topic, msg in sent.items():
                pubs[topic].publish(msg)
            time.sleep(0.1)
        got = {t: h.messages(t)[0] for t in sent}
        np.testing.assert_array_equal(msg_to_chunk(got["rt/chunk"]).positions, chunk.positions)
        req = got["rt/request"]
        assert req.request_id == 7 and len(req.candidates) == 2
        np.testing.assert_array_equal(image_message_to_rgb(req.images[0]), np.arange(60, dtype=np.uint8).reshape(4, 5, 3))
        assert msg_to_chunk(req.candidates[1]).predicted_value == pytest.approx(0.1)
        assert list(got["rt/result"].candidate_values) == pytest.approx([0.2, 0.9]) and got["rt/result"].chosen_index == 1
        ev = got["rt/event"]
        assert ev.event == EpisodeEvent.LABEL and ev.success and math.isnan(ev.score)
    finally:
        h.close()


def test_package_logging_reaches_the_nodes_ros_logger(rclpy_context):
    """Library modules log through `logging`; a node forwards those records to its ROS logger."""
    import logging

    from rclpy.node import Node

    from cosmos_policy_ros.nodes.common import forward_package_logging

    node = Node("log_forwarding", context=rclpy_context)
    seen = []

    class Recorder:
        def info(self, text):
            seen.append(("info", text))

        def warning(self, text):
            seen.append(("warning", text))

        def error(self, text):
            seen.append(("error", text))

    node.get_logger = lambda: Recorder()
    try:
        forward_package_logging(node)
        logging.getLogger("cosmos_policy_ros.model.denoiser").warning("compile failed: %s", "no compiler")
        logging.getLogger("cosmos_policy_ros.recording.recorder").info("episode closed")
        logging.getLogger("some_other_library").warning("not ours")
        assert seen == [("warning", "cosmos_policy_ros.model.denoiser: compile failed: no compiler"),
                        ("info", "cosmos_policy_ros.recording.recorder: episode closed")]
        # A destroyed node's handler never raises into library code (it prints instead).
        del node.get_logger
        node.destroy_node()
        logging.getLogger("cosmos_policy_ros.recording.recorder").error("after the node: %s", "printed")
    finally:
        for handler in list(logging.getLogger("cosmos_policy_ros").handlers):
            logging.getLogger("cosmos_policy_ros").removeHandler(handler)
