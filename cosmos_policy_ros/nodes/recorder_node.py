"""recorder_node: one rosbag2 (MCAP) directory per episode, from the wire.

Subscribes with `raw=True` so messages reach `recording.EpisodeRecorder` as the CDR bytes
that arrived (no deserialize/re-serialize); the recorder queues them for its writer
thread. Episode boundaries and labels come from `episode_events` (EpisodeEvent):
START opens `<output_dir>/<episode_id>[_n]/`, STOP closes it (with the outcome when the
event carries one), LABEL sets or corrects the outcome of a recorded episode.
Recorded: the configured cameras and joint states, `executed_command`, `action_chunk`,
the planner's requests/results, plus `extra_topics` (name:type pairs).
"""
from __future__ import annotations

from pathlib import Path

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

from cosmos_policy_ros.config import (
    ACTION_CHUNK_TOPIC,
    EPISODE_EVENTS_TOPIC,
    EXECUTED_COMMAND_TOPIC,
)
from cosmos_policy_ros.msg import EpisodeEvent
from cosmos_policy_ros.nodes.common import (
    declare_config,
    reliable_qos,
    run_node,
    sensor_qos,
)
from cosmos_policy_ros.nodes.messages import stamp_to_ns
from cosmos_policy_ros.recording import (
    EpisodeOutcome,
    EpisodeRecorder,
    RecorderError,
    label_episode,
)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"


def recorded_topics(config) -> list[tuple[str, str, str]]:
    """(topic, ROS type, qos kind) the recorder subscribes to for a robot config."""
    compressed = config.camera_transport == "compressed"
    topics = [(f"{c.topic}/compressed" if compressed else c.topic, COMPRESSED if compressed else IMAGE, "sensor")
              for c in config.cameras]
    topics += [(a.joint_state_topic, "sensor_msgs/msg/JointState", "sensor") for a in config.arms]
    topics += [
        (EXECUTED_COMMAND_TOPIC, "std_msgs/msg/Float64MultiArray", "reliable"),
        (ACTION_CHUNK_TOPIC, "cosmos_policy_ros/msg/ActionChunk", "reliable"),
        (config.planning.request_topic, "cosmos_policy_ros/msg/PlanRequest", "reliable"),
        (config.planning.result_topic, "cosmos_policy_ros/msg/PlanResult", "reliable"),
    ]
    return topics


def _ros_type(type_name: str):
    import importlib

    package, _, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


class RecorderNode(Node):
    def __init__(self, **node_options):
        super().__init__("recorder_node", **node_options)
        self.config = declare_config(self)
        default_dir = self.config.recording.output_dir
        self.output_dir = Path(self.declare_parameter(
            "output_dir", default_dir, ParameterDescriptor(description="parent folder of the episode bags")).value)
        extra = self.declare_parameter(
            "extra_topics", [""], ParameterDescriptor(description="more topics to record, 'topic:pkg/msg/Type'")).value
        self.recorder = EpisodeRecorder(self.output_dir)
        self.episodes: dict[str, Path] = {}  # episode id -> bag dir (this run)
        topics = recorded_topics(self.config)
        for item in extra:
            if not item:
                continue
            topic, _, type_name = item.partition(":")
            if type_name not in self.recorder.typestore.fielddefs:
                # rosbags must know the definition to write the bag's schema.
                self.get_logger().error(f"extra_topics: not recording {topic!r}: type {type_name!r} is not a "
                                        "standard ROS 2 message or one of this package's")
                continue
            topics.append((topic, type_name, "reliable"))
        self.subscriptions_info = []
        for topic, type_name, qos in topics:
            resolved = self.resolve_topic_name(topic)
            self.create_subscription(
                _ros_type(type_name), topic,
                lambda data, name=resolved, t=type_name: self._on_message(name, t, data),
                # Deep queues: a history slot overwritten before the callback took it is a
                # message lost even on a reliable topic (KEEP_LAST).
                sensor_qos(30) if qos == "sensor" else reliable_qos(1000), raw=True)
            self.subscriptions_info.append((resolved, type_name))
        self.create_subscription(EpisodeEvent, EPISODE_EVENTS_TOPIC, self._on_event, reliable_qos(50))
        self._stamp_to_ns = stamp_to_ns
        self._outcome = EpisodeOutcome
        self._label = label_episode
        self._recorder_error = RecorderError
        self.create_timer(5.0, self._log_stats)
        self.get_logger().info(f"recording {len(self.subscriptions_info)} topics into {self.output_dir}/ "
                               "(one bag per episode, started by EpisodeEvent START on episode_events)")

    def _on_message(self, topic: str, type_name: str, data: bytes) -> None:
        if self.recorder.recording:
            self.recorder.write(topic, type_name, data, self.get_clock().now().nanoseconds)

    def _on_event(self, msg) -> None:
        stamp_ns = self._stamp_to_ns(msg.header.stamp) or self.get_clock().now().nanoseconds
        outcome = None
        if msg.has_outcome:
            score = None if msg.score != msg.score else float(msg.score)  # NaN: no score
            outcome = self._outcome(success=bool(msg.success), score=score, note=msg.note)
        try:
            if msg.event == msg.START:
                if self.recorder.recording:
                    self.recorder.stop_episode(None, stamp_ns=stamp_ns)
                name = self._unique_name(msg.episode_id or "episode")
                bag = self.recorder.start_episode(name, self._episode_metadata(msg.episode_id), stamp_ns=stamp_ns)
                self.episodes[msg.episode_id] = bag
                self.get_logger().info(f"episode {msg.episode_id}: recording into {bag}")
            elif msg.event == msg.STOP:
                if self.recorder.recording:
                    bag = self.recorder.bag_dir
                    self.recorder.stop_episode(outcome, stamp_ns=stamp_ns)
                    stats = self.recorder.stats()
                    self.get_logger().info(f"episode {msg.episode_id}: closed {bag} "
                                           f"({stats.written} messages written, {stats.dropped} dropped so far)")
            elif msg.event == msg.LABEL:
                bag = self.episodes.get(msg.episode_id) or self.output_dir / msg.episode_id
                if outcome is None or not bag.exists():
                    self.get_logger().error(f"label for {msg.episode_id!r} ignored: "
                                            f"{'no outcome in the event' if outcome is None else f'no bag {bag}'}")
                    return
                self._label(bag, outcome.success, outcome.score, outcome.note)
                self.get_logger().info(f"episode {msg.episode_id}: labelled {'success' if outcome.success else 'failure'}")
        except (self._recorder_error, ValueError, OSError) as exc:
            self.get_logger().error(f"episode event {msg.event} for {msg.episode_id!r} failed: {exc}")

    def _episode_metadata(self, episode_id: str) -> dict:
        """What a converter needs to refuse mixing bags of different robot set-ups."""
        cfg = self.config
        return {"episode_id": episode_id, "task": cfg.policy.task, "robot": cfg.robot,
                "config_file": str(cfg.path), "robot_signature": cfg.data_signature()}

    def _unique_name(self, episode_id: str) -> str:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in episode_id)
        name, n = safe, 1
        while (self.output_dir / name).exists():
            n += 1
            name = f"{safe}_{n}"
        return name

    def _log_stats(self) -> None:
        s = self.recorder.stats()
        if s.dropped:
            self.get_logger().warning(f"recorder dropped {s.dropped} messages (disk too slow?): {s.dropped_by_topic}")

    def close(self) -> None:
        # Drains the queue and closes the bag: every accepted message reaches the disk.
        self.recorder.close()


def make_recorder_node(**node_options):
    """Build the node; node_options go to rclpy Node (context, parameter_overrides, ...)."""
    return RecorderNode(**node_options)


def main(args=None):
    return run_node(make_recorder_node, args)


if __name__ == "__main__":
    raise SystemExit(main())
