"""PlanningClient: the policy node's side of best-of-N planning through planner_node.

`plan(observation)` samples N candidate chunks with the policy (one batched call), sends
them with the observation as a PlanRequest, and waits at most `planning.deadline_s` for
the PlanResult with the same request_id. It returns the chosen candidate; without an answer
in time (planner absent, killed, slow, or it answered ok=false) it returns candidate 0, the
policy's own sample, logs why and counts it. With no planner subscribed at all it does not
wait. There is no connection state: a planner that (re)starts is used from the next request
on. What planning saw (every candidate's value, the chosen index, or the fallback reason)
is published as a PlanResult on `planning/decision`.
"""
from __future__ import annotations

import threading
import time

import numpy as np

from cosmos_policy_ros.config import ConfigError, RobotConfig
from cosmos_policy_ros.control.planning import (
    PendingRequests,
    PlanDecision,
    PlanningSettings,
    PlanningStats,
    action_latents,
    clamp_candidates,
    decide,
    perturb_candidates,
    sample_candidates,
)
from cosmos_policy_ros.control.safety import JointLimits
from cosmos_policy_ros.nodes.common import reliable_qos
from cosmos_policy_ros.types import Observation, PolicyOutput


class PlanningClient:
    """Best-of-N through a remote planner; ``plan`` is called from the inference thread."""

    def __init__(self, node, config: RobotConfig, policy) -> None:
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
        from rclpy.clock import Clock, ClockType

        from cosmos_policy_ros.control.policies import policy_control_period_s
        from cosmos_policy_ros.msg import PlanRequest, PlanResult

        self.node = node
        self.config = config
        self.policy = policy
        self._client_id = node.get_fully_qualified_name()
        self.settings = PlanningSettings.from_config(config)
        if not hasattr(policy, "sample_candidates"):
            raise ConfigError(f"{config.path}: planning.enabled: best-of-N needs a policy that samples candidates "
                              f"(policy.type cosmos); {type(policy).__name__} does not")
        # The planner predicts the futures; decoding N policy-mode futures here is wasted work.
        if getattr(policy, "decode_future_images", False):
            policy.decode_future_images = False
        # The policy's own seed (candidate 0 = what the policy alone runs), else planning.seed, else 0.
        seed = getattr(policy, "seed", None)
        self.seed = int(seed if seed is not None else (self.settings.seed or 0))
        self.chunk_period_s = policy_control_period_s(policy, config.control_period_s)
        self._limits = JointLimits.from_robot_config(config)
        self._noisy_joints = np.array([name not in config.gripper_joints for name in config.joint_names])
        self.stats = PlanningStats()
        self._pending = PendingRequests()
        self._request_id = 0
        self._lock = threading.Lock()
        s = self.settings
        self._request_pub = node.create_publisher(PlanRequest, s.request_topic, reliable_qos(2))
        self._decision_pub = node.create_publisher(PlanResult, s.decision_topic, reliable_qos(10))
        # Own group: answers are taken in while the node's other callbacks run.
        self._result_sub = node.create_subscription(PlanResult, s.result_topic, self._on_result, reliable_qos(10),
                                                    callback_group=MutuallyExclusiveCallbackGroup())
        # Steady clock: planning statistics also appear while a sim runs slower than real time.
        self._timer = node.create_timer(5.0, self._log_stats, clock=Clock(clock_type=ClockType.STEADY_TIME))
        node.get_logger().info(
            f"planning on: best of {s.num_candidates} candidates through '{s.request_topic}' -> "
            f"'{s.result_topic}', deadline {s.deadline_s:g} s (then candidate 0 is executed)")

    # ------------------------------------------------------------------ ROS side
    def _on_result(self, msg) -> None:
        # Answers copy the request's header: another policy node's answers (same topic,
        # possibly the same request ids) carry its name, not ours.
        if msg.header.frame_id and msg.header.frame_id != self._client_id:
            return
        self._pending.deliver(int(msg.request_id), msg)

    def _request_msg(self, request_id: int, observation: Observation, candidates: list[PolicyOutput]):
        from cosmos_policy_ros.msg import PlanRequest
        from cosmos_policy_ros.nodes.messages import (
            chunk_to_msg,
            ns_to_stamp,
            rgb_to_image_msg,
            seconds_to_duration,
        )
        from cosmos_policy_ros.types import ActionChunk

        msg = PlanRequest()
        msg.header.stamp = ns_to_stamp(observation.stamp_ns)
        msg.header.frame_id = self._client_id  # the planner serves the newest request per client
        msg.request_id = request_id
        msg.task = observation.task
        msg.camera_names = list(observation.images)
        msg.images = [rgb_to_image_msg(img, observation.stamp_ns, frame_id=cam)
                      for cam, img in observation.images.items()]
        msg.joint_positions = np.asarray(observation.joint_positions, dtype=np.float64)
        msg.candidates = [
            chunk_to_msg(ActionChunk(stamp_ns=observation.stamp_ns, chunk_id=i, joint_names=self.config.joint_names,
                                     positions=np.asarray(c.actions, dtype=np.float64),
                                     control_period_s=self.chunk_period_s, predicted_value=c.predicted_value))
            for i, c in enumerate(candidates)]
        latents = action_latents(candidates)
        if latents is not None:  # the world model is conditioned on the raw action latents
            msg.action_latents = latents.detach().cpu().numpy().astype(np.float32).ravel()
            msg.action_latents_shape = list(latents.shape)
        msg.deadline = seconds_to_duration(self.settings.deadline_s)
        return msg

    def _publish_decision(self, request_id: int, observation: Observation, decision: PlanDecision,
                          answer, n: int) -> None:
        from cosmos_policy_ros.msg import PlanResult
        from cosmos_policy_ros.nodes.messages import ns_to_stamp

        msg = PlanResult()
        msg.header.stamp = ns_to_stamp(observation.stamp_ns)
        msg.request_id = request_id
        msg.chosen_index = decision.chosen_index
        msg.ok = not decision.fallback
        if decision.candidate_values is not None:
            msg.candidate_values = [float(v) for v in decision.candidate_values]
        else:
            msg.candidate_values = [float("nan")] * n
        if decision.output.future_joint_positions is not None:
            msg.predicted_joint_positions = [float(v) for v in decision.output.future_joint_positions]
        msg.compute_time = float(answer.compute_time) if answer is not None else 0.0
        msg.message = f"fallback to candidate 0: {decision.fallback}" if decision.fallback else ""
        self._decision_pub.publish(msg)

    # ------------------------------------------------------------------ planning
    def plan(self, observation: Observation) -> PolicyOutput:
        s = self.settings
        with self._lock:
            self._request_id += 1
            request_id = self._request_id
        candidates = sample_candidates(self.policy, observation, s.num_candidates, self.seed)
        if s.candidate_noise_rad > 0:
            candidates = perturb_candidates(candidates, s.candidate_noise_rad, self._noisy_joints,
                                            np.random.default_rng([self.seed, request_id]))
        candidates = clamp_candidates(candidates, self._limits.lower, self._limits.upper)
        msg = self._request_msg(request_id, observation, candidates)
        self._pending.open(request_id)
        sent = time.monotonic()
        if self._request_pub.get_subscription_count() == 0:
            self._pending.cancel(request_id)
            answer, fallback = None, "no planner (nothing subscribed to the request topic)"
        else:
            self._request_pub.publish(msg)
            answer = self._pending.wait(request_id, s.deadline_s, since=sent)
            fallback = "" if answer is not None else f"timeout ({s.deadline_s:g} s)"
        wait_s = time.monotonic() - sent
        if answer is not None and not answer.ok:
            fallback = f"planner error: {answer.message}"
        if answer is not None and not fallback:
            future = np.asarray(answer.predicted_joint_positions, dtype=np.float64)
            decision = decide(candidates, np.asarray(answer.candidate_values, dtype=np.float64),
                              int(answer.chosen_index), future if future.size == self.config.dof else None)
        else:
            decision = decide(candidates, fallback=fallback)
        with self._lock:
            self.stats.record(decision, wait_s, None if answer is None else float(answer.compute_time))
        if decision.fallback:
            self.node.get_logger().warning(
                f"plan {request_id}: executing candidate 0 after {wait_s:.2f} s: {decision.fallback}",
                throttle_duration_sec=2.0)
        self._publish_decision(request_id, observation, decision, answer, len(candidates))
        self.last_decision = decision
        return decision.output

    def _log_stats(self) -> None:
        with self._lock:
            line = self.stats.summary()
        self.node.get_logger().info(line)

    def close(self) -> None:
        with self._lock:
            line = self.stats.summary()
        self.node.get_logger().info(f"final {line}")
