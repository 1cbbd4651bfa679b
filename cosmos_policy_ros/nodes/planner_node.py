"""planner_node: PlanRequest -> planning model -> PlanResult (+ imagined camera frames).

Its own process, on this machine or another GPU host in the same ROS domain. Loads the
planning checkpoint (`planning.checkpoint`, parameter `checkpoint`), scores every request's
candidates with `planning.ModelPlanner` (all candidates x ensemble batched) and answers on
`planner/result`. Then, off the decision's critical path, it decodes the chosen chunk's
predicted camera frames and publishes them as rgb8 sensor_msgs/Image on
`planner/imagination/<camera>` (stamped with the time they depict: observation time + chunk
duration). Requests are worked on newest first: one that arrives while the model is busy
replaces the waiting one, and one whose deadline has passed before work starts is skipped
(its client has already executed candidate 0).
"""
from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import Image

from cosmos_policy_ros.config import ConfigError
from cosmos_policy_ros.control.planning import PlanningSettings, make_model_planner
from cosmos_policy_ros.msg import PlanRequest, PlanResult
from cosmos_policy_ros.nodes.common import declare_config, reliable_qos, run_node
from cosmos_policy_ros.nodes.messages import duration_to_seconds, rgb_to_image_msg


def request_to_inputs(msg, joint_names: tuple[str, ...]):
    """PlanRequest -> (Observation, candidates [N, horizon, dof] in ``joint_names`` order).

    Raises ValueError naming what does not fit (joints, shapes, images).
    """
    from cosmos_policy_ros.nodes.messages import (
        image_msg_to_rgb,
        msg_to_chunk,
        stamp_to_ns,
    )
    from cosmos_policy_ros.types import Observation

    if not msg.candidates:
        raise ValueError("request has no candidates")
    chunks = [msg_to_chunk(c) for c in msg.candidates]
    names = chunks[0].joint_names
    if any(c.joint_names != names for c in chunks):
        raise ValueError("candidates disagree on joint_names")
    if set(names) != set(joint_names) or len(names) != len(joint_names):
        raise ValueError(f"candidates have joints {list(names)}, the planning model needs {list(joint_names)}")
    order = [names.index(n) for n in joint_names]
    horizons = {c.horizon for c in chunks}
    if len(horizons) != 1:
        raise ValueError(f"candidates have different horizons {sorted(horizons)}")
    candidates = np.stack([c.positions[:, order] for c in chunks])
    joints = np.asarray(msg.joint_positions, dtype=np.float64)
    if joints.shape != (len(names),):
        raise ValueError(f"joint_positions has {joints.size} entries, expected {len(names)}")
    if len(msg.camera_names) != len(msg.images):
        raise ValueError(f"{len(msg.camera_names)} camera names for {len(msg.images)} images")
    images = {name: image_msg_to_rgb(img) for name, img in zip(msg.camera_names, msg.images)}
    observation = Observation(stamp_ns=stamp_to_ns(msg.header.stamp), images=images,
                              joint_positions=joints[order], task=msg.task)
    return observation, candidates, chunks[0]


class PlannerNode(Node):
    def __init__(self, **node_options):
        super().__init__("planner_node", **node_options)
        self.config = declare_config(self, {
            "checkpoint": ("planning.checkpoint", "planning model folder (default: the shipped tiny one)"),
        })
        try:
            self.settings = PlanningSettings.from_config(self.config)
            started = time.perf_counter()
            self.planner = make_model_planner(self.config, self.settings)
        except ConfigError as exc:
            self.get_logger().fatal(str(exc))
            raise
        s = self.settings
        self.result_pub = self.create_publisher(PlanResult, s.result_topic, reliable_qos(10))
        self.imagination_pubs = {}
        if s.publish_imagination:
            self.imagination_pubs = {
                cam: self.create_publisher(Image, f"{s.imagination_topic}/{cam}", reliable_qos(2))
                for cam in self.planner.camera_names}
        # Own group: a long model call never delays taking in the next request.
        self.create_subscription(PlanRequest, s.request_topic, self._on_request, reliable_qos(2),
                                 callback_group=MutuallyExclusiveCallbackGroup())
        # Statistics on the steady clock: with use_sim_time a slow sim would silence them.
        self.create_timer(5.0, self._log_stats, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.counts: Counter[str] = Counter()
        self.compute_s: list[float] = []
        self._cond = threading.Condition()
        self._waiting = None  # (msg, monotonic receive time)
        self._stop = False
        self._worker = threading.Thread(target=self._work, daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"planner ready in {time.perf_counter() - started:.1f} s: {s.checkpoint_path()} on "
            f"{self.planner.model.device}; ensemble {s.num_future_samples} future x {s.num_value_samples} value "
            f"samples, aggregation {s.aggregation}; listening on '{s.request_topic}'")

    def _on_request(self, msg) -> None:
        with self._cond:
            if self._waiting is not None:
                self.counts["superseded"] += 1
            self._waiting = (msg, time.monotonic())
            self._cond.notify()

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._waiting is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                msg, received = self._waiting
                self._waiting = None
            if time.monotonic() - received > duration_to_seconds(msg.deadline):
                self.counts["expired"] += 1
                continue
            try:
                self._plan(msg)
            except Exception as exc:  # noqa: BLE001 - e.g. publishing while the context shuts down
                if self._stop:
                    return
                self.get_logger().error(f"request {msg.request_id}: {exc!r}", throttle_duration_sec=5.0)

    def _plan(self, msg) -> None:
        result = PlanResult()
        result.header = msg.header
        result.request_id = msg.request_id
        started = time.perf_counter()
        chosen_chunk = encoded = first = None
        try:
            observation, candidates, first = request_to_inputs(msg, self.planner.joint_names)
            if candidates.shape[1] != self.planner.chunk_size:
                raise ValueError(f"candidates have horizon {candidates.shape[1]}, "
                                 f"the planning model predicts after {self.planner.chunk_size} steps")
            encoded = self.planner.encode(observation)
            scores = self.planner.score(encoded, candidates)
            result.candidate_values = [float(v) for v in scores.candidate_values]
            result.chosen_index = scores.chosen_index
            if scores.future_joint_positions is not None:
                result.predicted_joint_positions = [float(v) for v in scores.future_joint_positions[scores.chosen_index]]
            result.ok = True
            chosen_chunk = candidates[scores.chosen_index]
            self.counts["planned"] += 1
        except Exception as exc:  # noqa: BLE001 - a bad request or model error is answered, not fatal
            result.ok = False
            result.message = f"{type(exc).__name__}: {exc}"
            self.counts["failed"] += 1
            self.get_logger().error(f"request {msg.request_id}: {result.message}", throttle_duration_sec=5.0)
        result.compute_time = time.perf_counter() - started
        self.compute_s = (self.compute_s + [result.compute_time])[-50:]
        if self._stop:
            return  # shutting down: the context may already be gone
        self.result_pub.publish(result)
        self.get_logger().debug(f"request {msg.request_id}: ok {result.ok}, chosen {result.chosen_index}, "
                                f"{result.compute_time:.2f} s")
        if chosen_chunk is not None and self.imagination_pubs:
            with self._cond:
                busy = self._waiting is not None
            if busy:  # a request is waiting: planning it matters more than the picture
                self.counts["imagination_skipped"] += 1
            else:
                self._publish_imagination(encoded, chosen_chunk, msg, first)

    def _publish_imagination(self, encoded, chunk, msg, first) -> None:
        from cosmos_policy_ros.nodes.messages import stamp_to_ns

        try:
            frames = self.planner.imagine(encoded, chunk)
        except Exception as exc:  # noqa: BLE001 - visualization only
            self.get_logger().warning(f"imagination failed: {exc!r}", throttle_duration_sec=10.0)
            return
        depicted_ns = stamp_to_ns(msg.header.stamp) + first.horizon * first.period_ns
        for cam, rgb in frames.items():
            pub = self.imagination_pubs.get(cam)
            if pub is not None:
                pub.publish(rgb_to_image_msg(rgb, depicted_ns, frame_id=cam))

    def _log_stats(self) -> None:
        mean = f"{np.mean(self.compute_s):.2f} s" if self.compute_s else "-"
        self.get_logger().info(f"requests {dict(self.counts) or 'none yet'}, compute time mean {mean}")

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        # Let a running model call finish: exiting under it aborts the process.
        self._worker.join(timeout=30.0)
        if self.context.ok():
            self._log_stats()
        else:
            print(f"[planner_node] final: requests {dict(self.counts) or 'none'}", flush=True)


def make_planner_node(**node_options):
    """Build the node; node_options go to rclpy Node (context, parameter_overrides, ...)."""
    return PlannerNode(**node_options)


def main(args=None):
    return run_node(make_planner_node, args)


if __name__ == "__main__":
    raise SystemExit(main())
