"""planner_node: PlanRequest -> planning model -> PlanResult (+ imagined camera frames).

Its own process, on this machine or another GPU host in the same ROS domain. Loads the
planning checkpoint (`planning.checkpoint`, parameter `checkpoint`), scores every request's
candidates with `planning.ModelPlanner` (all candidates x ensemble batched) and answers on
`planner/result`. Then, off the decision's critical path, it decodes the chosen chunk's
predicted camera frames and publishes them as rgb8 sensor_msgs/Image on
`planner/imagination/<camera>` (stamped with the time they depict: observation time + chunk
duration).

Every request gets exactly one answer. On arrival it is validated
(`plan_requests.validate_request`: joints and candidates finite and within the robot YAML's
limits, cameras, images, task, at most `planning.max_candidates` candidates); a request that
cannot be scored is answered ok=false at once, naming the field and the value. Valid ones
wait, at most one per client (`plan_requests.NewestPerClient`): a newer request from the same
client answers the waiting one "superseded". One whose deadline has passed when the model
would start it is answered "expired" without computing (its client has executed candidate 0).
"""
from __future__ import annotations

import threading
import time

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import Image

from cosmos_policy_ros.config import ConfigError
from cosmos_policy_ros.control.planning import PlanningSettings, make_model_planner
from cosmos_policy_ros.msg import PlanRequest, PlanResult
from cosmos_policy_ros.nodes.common import declare_config, reliable_qos, run_node
from cosmos_policy_ros.nodes.messages import (
    duration_to_seconds,
    rgb_to_image_msg,
    stamp_to_ns,
)
from cosmos_policy_ros.nodes.plan_requests import (
    NewestPerClient,
    PlannerStats,
    RequestRefused,
    RequestRules,
    Waiting,
    client_key,
    deadline_passed,
    validate_request,
)

# Requests taken in per callback round before the executor: a burst from a client that
# does not wait for answers is superseded here instead of being dropped unanswered by DDS.
REQUEST_QUEUE_DEPTH = 20


def planner_rules(config, settings: PlanningSettings, planner) -> RequestRules:
    """What ``planner`` (a ModelPlanner) accepts, with the robot YAML's limits."""
    model = getattr(planner, "model", None)
    table = getattr(getattr(model, "checkpoint", None), "text_embeddings", None)
    return RequestRules.from_config(
        config, settings.max_candidates, planner.joint_names, planner.camera_names, planner.chunk_size,
        tasks=None if table is None else set(table),
        default_task=getattr(getattr(model, "config", None), "default_task", "") or "")


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
            self.rules = planner_rules(self.config, self.settings, self.planner)
        except (ConfigError, ValueError) as exc:
            self.get_logger().fatal(str(exc))
            raise ConfigError(str(exc)) from exc
        s = self.settings
        self.result_pub = self.create_publisher(PlanResult, s.result_topic, reliable_qos(REQUEST_QUEUE_DEPTH))
        self.imagination_pubs = {}
        if s.publish_imagination:
            self.imagination_pubs = {
                cam: self.create_publisher(Image, f"{s.imagination_topic}/{cam}", reliable_qos(2))
                for cam in self.planner.camera_names}
        self.stats = PlannerStats()
        self._stats_lock = threading.Lock()
        self.waiting = NewestPerClient()
        self._stop = False
        # Own group: a long model call never delays taking in the next request.
        self.create_subscription(PlanRequest, s.request_topic, self._on_request, reliable_qos(REQUEST_QUEUE_DEPTH),
                                 callback_group=MutuallyExclusiveCallbackGroup())
        # Statistics on the steady clock: with use_sim_time a slow sim would silence them.
        self.create_timer(5.0, self._log_stats, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._worker = threading.Thread(target=self._work, daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"planner ready in {time.perf_counter() - started:.1f} s: {s.checkpoint_path()} on "
            f"{self.planner.model.device}; ensemble {s.num_future_samples} future x {s.num_value_samples} value "
            f"samples, aggregation {s.aggregation}; at most {s.max_candidates} candidates; "
            f"listening on '{s.request_topic}'")

    # ------------------------------------------------------------------ answers
    def _answer(self, msg, ok: bool, message: str = "", compute_s: float = 0.0, scores=None) -> None:
        result = PlanResult()
        result.header = msg.header
        result.request_id = msg.request_id
        result.ok = ok
        result.message = message
        result.compute_time = float(compute_s)
        if scores is not None:
            result.candidate_values = [float(v) for v in scores.candidate_values]
            result.chosen_index = scores.chosen_index
            future = scores.future_joint_positions
            if future is not None:
                result.predicted_joint_positions = [float(v) for v in future[scores.chosen_index]]
        if self._stop:
            return  # shutting down: the context may already be gone
        self.result_pub.publish(result)

    def _count(self, outcome: str) -> None:
        with self._stats_lock:
            self.stats.counts[outcome] += 1

    # ------------------------------------------------------------------ requests in
    def _on_request(self, msg, info) -> None:
        """``info``: rclpy's MessageInfo (two parameters make rclpy pass it); its publisher GID
        tells clients apart when they leave header.frame_id empty."""
        received = time.monotonic()
        try:
            try:
                inputs = validate_request(msg, self.rules)
            except (TypeError, ValueError, IndexError, AttributeError) as exc:  # a malformed field not foreseen
                if isinstance(exc, RequestRefused):
                    raise
                raise RequestRefused("request", f"{type(exc).__name__}: {exc}") from exc
        except RequestRefused as exc:
            with self._stats_lock:
                self.stats.refused(exc)
            self.get_logger().warning(f"request {msg.request_id} refused: {exc}", throttle_duration_sec=5.0)
            self._answer(msg, False, f"refused: {exc}", time.monotonic() - received)
            return
        client = client_key(msg.header.frame_id, (info or {}).get("publisher_gid"))
        older = self.waiting.put(Waiting(client, msg, inputs, received))
        if older is not None:
            self._count("superseded")
            self._answer(older.request, False, f"superseded: request {msg.request_id} from the same client "
                                               f"arrived before the planner started this one")

    def _work(self) -> None:
        while True:
            item = self.waiting.take()
            if item is None:
                return
            msg = item.request
            deadline_s = duration_to_seconds(msg.deadline)
            waited_s = time.monotonic() - item.received_s
            if deadline_passed(item.received_s, deadline_s, time.monotonic()):
                self._count("expired")
                self._answer(msg, False, f"expired: waited {waited_s:.2f} s for the planner, "
                                         f"deadline {deadline_s:.2f} s")
                continue
            try:
                self._plan(msg, item.inputs)
            except Exception as exc:  # noqa: BLE001 - e.g. publishing while the context shuts down
                if self._stop:
                    return
                self.get_logger().error(f"request {msg.request_id}: {exc!r}", throttle_duration_sec=5.0)

    def _plan(self, msg, inputs) -> None:
        started = time.perf_counter()
        try:
            encoded = self.planner.encode(inputs.observation)
            scores = self.planner.score(encoded, inputs.candidates, action_latents=inputs.action_latents)
        except Exception as exc:  # noqa: BLE001 - a model error is answered, not fatal
            self._count("failed")
            message = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"request {msg.request_id}: {message}", throttle_duration_sec=5.0)
            self._answer(msg, False, message, time.perf_counter() - started)
            return
        compute_s = time.perf_counter() - started
        with self._stats_lock:
            self.stats.planned(compute_s)
        self._answer(msg, True, "", compute_s, scores)
        self.get_logger().debug(f"request {msg.request_id}: chosen {scores.chosen_index}, {compute_s:.2f} s")
        if self.imagination_pubs and not self._stop:
            if len(self.waiting):  # a request is waiting: planning it matters more than the picture
                self._count("imagination_skipped")
            else:
                self._publish_imagination(encoded, inputs.candidates[scores.chosen_index], msg, inputs.first_chunk)

    def _publish_imagination(self, encoded, chunk, msg, first) -> None:
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

    def stats_line(self) -> str:
        with self._stats_lock:
            return self.stats.summary(self.waiting.max_backlog)

    def _log_stats(self) -> None:
        self.get_logger().info(self.stats_line())

    def close(self) -> None:
        self._stop = True
        self.waiting.close()
        # Let a running model call finish: exiting under it aborts the process.
        self._worker.join(timeout=30.0)
        if self.context.ok():
            self.get_logger().info(f"final: {self.stats_line()}")
        else:
            print(f"[planner_node] final: {self.stats_line()}", flush=True)


def make_planner_node(**node_options):
    """Build the node; node_options go to rclpy Node (context, parameter_overrides, ...)."""
    return PlannerNode(**node_options)


def main(args=None):
    return run_node(make_planner_node, args)


if __name__ == "__main__":
    raise SystemExit(main())
