"""chunk_executor_node: ActionChunks -> per-tick arm commands at the control rate.

Logic lives in `execution.ChunkExecutor` (switching, blending, limits, e-stop); this node
feeds it messages and the clock, publishes what it returns through the configured output
adapter, and the full command on `executed_command` (for recording and plots).
Service `executor/enable` (std_srvs/SetBool): false = e-stop (hold), true = resume.
With the interbotix adapter the node first puts the grippers in the mode that takes motor
radians (see output_adapters) and refuses to start when the driver does not answer.

Sim eval mode (`sim.eval_mode`, see sim_node): each tick is announced on `executor/executing`
(std_msgs/Header, stamp = tick time, frame_id "chunk K step I" or "hold after chunk K")
before its commands; the sim steps on chunk ticks only, and the policy node asks for a chunk
at once on a hold after its newest one (its own estimate of the chunk's end can be a tick or
two late, and sim time, which drives its timer, would never reach it). A chunk
that arrives while the executor holds starts at once (stamped now, step 0) and the same
tick is commanded again from it, since the sim's clock stands still until then.
"""
from __future__ import annotations

import dataclasses
import importlib
import threading
import time

import numpy as np
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, Header
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from cosmos_policy_ros.config import (
    ACTION_CHUNK_TOPIC,
    EPISODE_EVENTS_TOPIC,
    EXECUTED_COMMAND_TOPIC,
    EXECUTOR_EXECUTING_TOPIC,
    ConfigError,
    joint_state_to_positions,
)
from cosmos_policy_ros.control.execution import ChunkExecutor, executing_status
from cosmos_policy_ros.control.output_adapters import (
    INTERBOTIX_GRIPPER_MODE,
    adapter_settings,
    gripper_mode_refusal,
    interbotix_gripper_plan,
    split_command,
)
from cosmos_policy_ros.msg import ActionChunk, EpisodeEvent
from cosmos_policy_ros.nodes.common import (
    declare_config,
    log_info,
    now_ns,
    reliable_qos,
    run_node,
    sensor_qos,
)
from cosmos_policy_ros.nodes.messages import (
    msg_to_chunk,
    ns_to_stamp,
    seconds_to_duration,
)


def _interbotix_msgs(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"output.adapter is 'interbotix' but {module} is not importable ({exc}); install the "
            "Interbotix messages (interbotix_xs_msgs) or choose the position/trajectory adapter") from exc


class ChunkExecutorNode(Node):
    def __init__(self, **node_options):
        super().__init__("chunk_executor_node", **node_options)
        self.config = declare_config(self, {
            "adapter": ("output.adapter", "override output.adapter: position | trajectory | interbotix"),
            "eval_mode": ("sim.eval_mode", "sim eval mode: announce chunk ticks, start a chunk at once"),
        })
        self.eval_mode = self.config.sim.eval_mode
        self._last_source = "hold"
        self._last_chunk_id = -1  # newest chunk a tick was commanded from (eval-mode status)
        self.executor_core = ChunkExecutor.from_config(self.config)
        self.adapter, self.gripper_unit = adapter_settings(self.config)
        if self.adapter == "interbotix":
            try:
                # Before any timer or subscription exists: no gripper command may leave
                # while the driver would still read it as metres.
                self._prepare_interbotix_grippers()
            except ConfigError as exc:
                self.get_logger().fatal(str(exc))
                raise
        self.period_s = self.config.control_period_s
        self._lock = threading.Lock()
        # Latest measured joints (joint_names order) from the arms' JointStates.
        self._measured = np.full(self.config.dof, np.nan)

        self.create_subscription(ActionChunk, ACTION_CHUNK_TOPIC, self._on_chunk, reliable_qos(10))
        self.create_subscription(EpisodeEvent, EPISODE_EVENTS_TOPIC, self._on_event, reliable_qos(20))
        for arm in self.config.arms:
            self.create_subscription(JointState, arm.joint_state_topic,
                                     lambda m, a=arm: self._on_joint_state(a, m), sensor_qos(5))
        self.create_service(SetBool, "executor/enable", self._on_enable)
        self.executed_pub = self.create_publisher(Float64MultiArray, EXECUTED_COMMAND_TOPIC, reliable_qos(50))
        self.executing_pub = (self.create_publisher(Header, EXECUTOR_EXECUTING_TOPIC, reliable_qos(10))
                              if self.eval_mode else None)
        self._make_output_publishers(Float64MultiArray, JointTrajectory, JointTrajectoryPoint, seconds_to_duration)
        self._msg_to_chunk = msg_to_chunk
        self.create_timer(self.period_s, self._tick)
        self.create_timer(5.0, self._log_stats)
        self.get_logger().info(
            f"executing {self.config.dof} joints at {self.config.control_rate_hz:g} Hz through the "
            f"'{self.adapter}' adapter (gripper unit {self.gripper_unit})")

    def _prepare_interbotix_grippers(self) -> None:
        plan = interbotix_gripper_plan(self.config)
        if plan.action == "assume":
            self.get_logger().warning(
                f"output.interbotix_gripper_mode is 'assume': the grippers must already be in "
                f"{INTERBOTIX_GRIPPER_MODE} mode (in linear_position the driver reads these motor radians as metres)")
            return
        srv = _interbotix_msgs("interbotix_xs_msgs.srv")
        deadline = time.monotonic() + plan.timeout_s
        failures = []
        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(self)
        try:
            for request in plan.requests:
                client = self.create_client(srv.OperatingModes, request.service)
                try:
                    if not client.wait_for_service(timeout_sec=max(0.0, deadline - time.monotonic())):
                        failures.append(f"service {request.service} not available within {plan.timeout_s:g} s")
                        continue
                    future = client.call_async(srv.OperatingModes.Request(
                        cmd_type=request.cmd_type, name=request.name, mode=request.mode,
                        profile_type=request.profile_type, profile_velocity=request.profile_velocity,
                        profile_acceleration=request.profile_acceleration))
                    executor.spin_until_future_complete(future, timeout_sec=max(0.0, deadline - time.monotonic()))
                    if not future.done() or future.exception() is not None:
                        failures.append(f"service {request.service} did not answer within {plan.timeout_s:g} s")
                finally:
                    self.destroy_client(client)
        finally:
            executor.remove_node(self)
            executor.shutdown()
        if failures:
            raise ConfigError(gripper_mode_refusal(self.config, plan, failures))
        self.get_logger().info(f"grippers set to {INTERBOTIX_GRIPPER_MODE} mode through "
                               f"{', '.join(r.service for r in plan.requests)}")

    def _make_output_publishers(self, Float64MultiArray, JointTrajectory, JointTrajectoryPoint, to_duration):
        self._outputs = {}
        for arm in self.config.arms:
            ns = arm.command_namespace
            if self.adapter == "position":
                pub = self.create_publisher(Float64MultiArray, f"{ns}/commands/position", reliable_qos(5))

                def send(cmd, pub=pub):
                    msg = Float64MultiArray()
                    msg.data = [float(v) for v in cmd.arm_positions] + ([cmd.gripper] if cmd.gripper is not None else [])
                    pub.publish(msg)
            elif self.adapter == "trajectory":
                pub = self.create_publisher(JointTrajectory, f"{ns}/arm_controller/joint_trajectory", reliable_qos(5))

                def send(cmd, pub=pub):
                    msg = JointTrajectory()
                    msg.joint_names = cmd.joint_names
                    point = JointTrajectoryPoint()
                    point.positions = [float(v) for v in cmd.arm_positions] + ([cmd.gripper] if cmd.gripper is not None else [])
                    point.time_from_start = to_duration(self.period_s)
                    msg.points = [point]
                    pub.publish(msg)
            else:
                xs = _interbotix_msgs("interbotix_xs_msgs.msg")
                group_pub = self.create_publisher(xs.JointGroupCommand, f"{ns}/commands/joint_group", reliable_qos(5))
                single_pub = self.create_publisher(xs.JointSingleCommand, f"{ns}/commands/joint_single", reliable_qos(5))

                def send(cmd, group_pub=group_pub, single_pub=single_pub, xs=xs):
                    group = xs.JointGroupCommand()
                    group.name = "arm"
                    group.cmd = [float(v) for v in cmd.arm_positions]
                    group_pub.publish(group)
                    if cmd.gripper is not None:
                        single = xs.JointSingleCommand()
                        single.name = "gripper"
                        single.cmd = float(cmd.gripper)
                        single_pub.publish(single)
            self._outputs[arm.name] = send

    def _on_joint_state(self, arm, msg) -> None:
        measured = self._measured.copy()
        try:
            if len(msg.name) != len(msg.position):
                raise ValueError(f"{arm.joint_state_topic}: {len(msg.name)} names, {len(msg.position)} positions")
            joint_state_to_positions(arm, list(msg.name), np.asarray(msg.position, dtype=np.float64), measured)
        except ValueError as exc:
            self.get_logger().error(f"ignoring joint state: {exc}", throttle_duration_sec=5.0)
            return
        with self._lock:
            idx = list(arm.indices)
            self._measured[idx] = measured[idx]

    def _on_chunk(self, msg) -> None:
        try:
            chunk = self._msg_to_chunk(msg)
        except ValueError as exc:
            self.get_logger().error(f"refused chunk: {exc}")
            return
        now = now_ns(self)
        with self._lock:
            waiting = self.eval_mode and self._last_source != "chunk"
            if waiting and chunk.stamp_ns <= now:
                # The sim stands still at `now` for this chunk: run it from step 0 now.
                chunk = dataclasses.replace(chunk, stamp_ns=now)
            result = self.executor_core.submit(chunk, now)
        if not result.accepted:
            self.get_logger().warning(f"refused chunk {chunk.chunk_id}: {result.reason}", throttle_duration_sec=1.0)
        elif waiting:
            self._tick()

    def _on_event(self, msg) -> None:
        if msg.event == msg.START:
            with self._lock:
                # The robot was reset: restart from its measured pose. An e-stop stays
                # in force (only executor/enable lifts it).
                self.executor_core.restart(now_ns(self))

    def _on_enable(self, request, response):
        with self._lock:
            self.executor_core.set_enabled(bool(request.data), now_ns(self))
        response.success = True
        response.message = "enabled" if request.data else "disabled: holding position"
        self.get_logger().warning(response.message) if not request.data else self.get_logger().info(response.message)
        return response

    def _tick(self) -> None:
        with self._lock:
            measured = self._measured.copy() if np.all(np.isfinite(self._measured)) else None
            now = now_ns(self)
            result = self.executor_core.tick(now, measured)
            self._last_source = result.source
        if result.command is None:
            return
        if result.source == "chunk":
            self._last_chunk_id = max(self._last_chunk_id, int(result.chunk_id))
        if self.executing_pub is not None:
            # every tick: the sim steps on chunk ticks only; the policy node asks for the next
            # chunk on a hold after its newest one, whatever its own estimate of the end says
            status = Header()
            status.stamp = ns_to_stamp(now)
            status.frame_id = executing_status(result.source, result.chunk_id, result.step_index, self._last_chunk_id)
            self.executing_pub.publish(status)
        for cmd in split_command(self.config, result.command, self.gripper_unit):
            self._outputs[cmd.arm.name](cmd)
        msg = Float64MultiArray()
        msg.data = [float(v) for v in result.command]
        self.executed_pub.publish(msg)

    def close(self) -> None:
        self._log_stats()  # final numbers

    def _log_stats(self) -> None:
        with self._lock:
            stats = self.executor_core.stats()
        log_info(self,
            "ticks {ticks} (chunk {chunk_ticks}, hold {hold_ticks}, starved {starved_ticks}, disabled "
            "{disabled_ticks}), chunks accepted {accepted} rejected {rejected}, clamped {clamped_ticks}, "
            "rate-limited {rate_limited_ticks}".format(**stats))  # the 5 s timer sets the rate


def make_executor_node(**node_options):
    """Build the node; node_options go to rclpy Node (context, parameter_overrides, ...)."""
    return ChunkExecutorNode(**node_options)


def main(args=None):
    return run_node(make_executor_node, args)


if __name__ == "__main__":
    raise SystemExit(main())
