"""policy_node: cameras + joint states -> Observation -> Policy -> ActionChunk.

Observation assembly (skew/age checks) is `observation.ObservationAssembler`; when to ask
for the next chunk is `execution.InferenceTrigger` (overlapped with the running chunk by
default). Inference runs on a worker thread so subscriptions keep flowing; the chunk is
stamped with the observation's time. Optional best-of-N planning is `planning_client`.
"""
from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Header

from cosmos_policy_ros.config import (
    ACTION_CHUNK_TOPIC,
    EPISODE_EVENTS_TOPIC,
    EXECUTOR_EXECUTING_TOPIC,
    SIM_OBJECT_POSE_TOPIC,
    ConfigError,
)
from cosmos_policy_ros.control.execution import InferenceTrigger, status_ran_out
from cosmos_policy_ros.control.images import (
    ImageConversionError,
    check_image,
    image_message_to_rgb,
)
from cosmos_policy_ros.control.observation import ObservationAssembler
from cosmos_policy_ros.control.policies import make_policy, policy_control_period_s
from cosmos_policy_ros.msg import ActionChunk, EpisodeEvent
from cosmos_policy_ros.nodes.common import (
    declare_config,
    log_info,
    now_ns,
    reliable_qos,
    run_node,
    sensor_qos,
)
from cosmos_policy_ros.nodes.messages import chunk_to_msg, stamp_to_ns
from cosmos_policy_ros.types import ActionChunk as Chunk


class PolicyNode(Node):
    def __init__(self, **node_options):
        super().__init__("policy_node", **node_options)
        self.config = declare_config(self, {
            "policy_type": ("policy.type", "override policy.type"),
            "checkpoint": ("policy.checkpoint", "override policy.checkpoint (Cosmos checkpoint folder)"),
            "backend": ("policy.backend", "override policy.backend: torch | onnx"),
            "planning": ("planning.enabled", "best-of-N planning through planner_node"),
        })
        policy_cfg = self.config.policy
        self.policy = make_policy(self.config)
        self.assembler = ObservationAssembler(
            self.config, task=policy_cfg.task,
            required_privileged=tuple(getattr(self.policy, "required_privileged", ())))
        self.trigger = InferenceTrigger(mode=policy_cfg.trigger, margin_s=policy_cfg.trigger_margin_s)
        text_embedding = getattr(self.policy, "text_embedding", None)
        if text_embedding is not None:
            try:  # fail at start-up, not at the first observation
                text_embedding(policy_cfg.task)
            except KeyError as exc:
                raise ConfigError(f"{self.config.path}: policy.task: {exc.args[0]}") from exc
        self.chunk_period_s = policy_control_period_s(self.policy, self.config.control_period_s)
        self.errors: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._chunk_id = 0
        self._episode = 0
        self._busy = threading.Event()

        self.planning = None
        if self.config.planning.enabled:
            from cosmos_policy_ros.nodes.planning_client import PlanningClient

            self.planning = PlanningClient(self, self.config, self.policy)

        compressed = self.config.camera_transport == "compressed"
        for cam in self.config.cameras:
            topic = f"{cam.topic}/compressed" if compressed else cam.topic
            self.create_subscription(CompressedImage if compressed else Image, topic,
                                     lambda m, c=cam.name: self._on_image(c, m), sensor_qos(2))
        for arm in self.config.arms:
            self.create_subscription(JointState, arm.joint_state_topic,
                                     lambda m, a=arm.name: self._on_joint_state(a, m), sensor_qos(5))
        self.create_subscription(PoseStamped, SIM_OBJECT_POSE_TOPIC, self._on_object_pose, reliable_qos(5))
        self.create_subscription(EpisodeEvent, EPISODE_EVENTS_TOPIC, self._on_event, reliable_qos(20))
        # eval mode: the executor's per-tick status (nothing is published there otherwise)
        self.create_subscription(Header, EXECUTOR_EXECUTING_TOPIC, self._on_executor_status, reliable_qos(10))
        self.ran_out_requests = 0
        self.chunk_pub = self.create_publisher(ActionChunk, ACTION_CHUNK_TOPIC, reliable_qos(10))
        self.create_timer(self.config.control_period_s, self._maybe_infer)
        self.create_timer(5.0, self._log_stats)
        self._worker = None
        noise = self.config.collection.action_noise_rad
        self.get_logger().info(f"policy '{policy_cfg.type}' ready; cameras "
                               f"{[c.name for c in self.config.cameras]}, {self.config.dof} joints"
                               + (f"; rollout collection: action noise {noise:g} rad per chunk" if noise else ""))

    # -- inputs --------------------------------------------------------------------
    def _on_image(self, camera: str, msg) -> None:
        # Only header checks here (O(1)); pixels are converted when an observation
        # uses the frame, not for every frame of every camera.
        try:
            if hasattr(msg, "encoding"):
                check_image(msg.encoding, msg.height, msg.width, msg.step, len(msg.data))
            elif not len(msg.data):
                raise ImageConversionError(f"empty compressed image (format {msg.format!r})")
        except ImageConversionError as exc:
            self.errors[f"image:{camera}"] += 1
            self.get_logger().error(f"{camera}: dropped image: {exc}", throttle_duration_sec=5.0)
            return
        with self._lock:
            self.assembler.add_image(camera, stamp_to_ns(msg.header.stamp), msg)

    def _on_joint_state(self, arm: str, msg) -> None:
        try:
            with self._lock:
                self.assembler.add_joint_state(arm, stamp_to_ns(msg.header.stamp), list(msg.name), list(msg.position))
        except ValueError as exc:
            self.errors[f"joint_state:{arm}"] += 1
            self.get_logger().error(f"dropped joint state: {exc}", throttle_duration_sec=5.0)

    def _on_object_pose(self, msg) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        with self._lock:
            self.assembler.set_privileged("object_pose", np.array([p.x, p.y, p.z, q.w, q.x, q.y, q.z]),
                                          stamp_to_ns(msg.header.stamp))

    def _on_event(self, msg) -> None:
        if msg.event == msg.START:
            with self._lock:
                self._episode += 1
                # keep what the new episode already sent (its START may arrive after its first
                # frame); an unstamped START (0) forgets everything
                start_ns = stamp_to_ns(msg.header.stamp)
                self.assembler.clear(before_ns=start_ns or None)
                self.policy.reset()
                self.trigger = InferenceTrigger(mode=self.trigger.mode, margin_s=self.trigger.margin_s,
                                                initial_latency_s=self.trigger.latency_s)
            self.get_logger().info(f"episode {msg.episode_id} started: policy reset")

    def _on_executor_status(self, msg) -> None:
        # Sim time stands still while the executor holds (eval mode), so the timer that asks for
        # chunks only fires again once one runs: if the trigger's estimate of when the chunk ends
        # is later than the executor's, nothing would ever ask. The executor's word wins.
        if self._busy.is_set() or not status_ran_out(msg.frame_id, self._chunk_id):
            return
        with self._lock:
            if self.trigger.remaining_s(now_ns(self)) > 0.0:
                self.trigger.set_active_until(None)
                self.ran_out_requests += 1
        self._maybe_infer()

    # -- inference -----------------------------------------------------------------
    def _maybe_infer(self) -> None:
        t = now_ns(self)
        with self._lock:
            if self._busy.is_set() or not self.trigger.should_request(t):
                return
            observation = self.assembler.assemble(t, decode=image_message_to_rgb)
            if observation is None:
                return
            self.trigger.request_started(t)
            self._busy.set()
            episode = self._episode
        self._worker = threading.Thread(target=self._infer, args=(observation, episode), daemon=True)
        self._worker.start()

    def _infer(self, observation, episode: int) -> None:
        chunk = None
        started = time.perf_counter()
        try:
            if self.planning is not None:
                output = self.planning.plan(observation)
            else:
                output = self.policy.infer(observation)
            actions = np.asarray(output.actions, dtype=np.float64)
            if actions.ndim != 2 or actions.shape[1] != self.config.dof:
                raise ValueError(f"policy returned actions of shape {actions.shape}, expected [horizon, {self.config.dof}]")
            with self._lock:
                if episode != self._episode:
                    return  # computed for an episode that has ended
                self._chunk_id += 1
                chunk = Chunk(stamp_ns=observation.stamp_ns, chunk_id=self._chunk_id,
                              joint_names=self.config.joint_names, positions=actions,
                              control_period_s=self.chunk_period_s,
                              predicted_value=output.predicted_value)
            self.chunk_pub.publish(chunk_to_msg(chunk))
            self.last_latency_s = time.perf_counter() - started
        except Exception as exc:  # noqa: BLE001 - a failing model must not kill the node: no chunk, robot holds
            self.errors["inference"] += 1
            self.get_logger().error(f"inference failed, no chunk published (executor holds): {exc!r}",
                                    throttle_duration_sec=2.0)
        finally:
            with self._lock:
                self.trigger.request_finished(now_ns(self), chunk)
            self._busy.clear()

    def _log_stats(self) -> None:
        with self._lock:
            refusals = dict(self.assembler.refusals)
            assembled = self.assembler.assembled
        log_info(
            self, f"chunks {self._chunk_id}, observations {assembled}, refused {refusals or 'none'} "
            f"(last: {self.assembler.last_refusal or '-'}), "
            f"errors {dict(self.errors) or 'none'}, latency {self.trigger.latency_s * 1e3:.0f} ms"
            + (f", asked early on the executor's hold {self.ran_out_requests}x" if self.ran_out_requests else ""))  # the 5 s timer sets the rate

    def close(self) -> None:
        self._log_stats()  # final numbers
        if self.planning is not None:
            self.planning.close()


def make_policy_node(**node_options):
    """Build the node; node_options go to rclpy Node (context, parameter_overrides, ...)."""
    return PolicyNode(**node_options)


def main(args=None):
    return run_node(make_policy_node, args)


if __name__ == "__main__":
    raise SystemExit(main())
