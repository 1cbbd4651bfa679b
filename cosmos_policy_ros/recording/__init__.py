"""Rollout recording to rosbag2 (MCAP): the bag layout and outcome labels (``bag``), the
episode recorder (``recorder``) and recovery of a killed recorder's bag (``recovery``)."""
from cosmos_policy_ros.recording.bag import (
    EPISODE_EVENT_TYPE,
    EpisodeOutcome,
    RecorderError,
    build_typestore,
    find_msg_dir,
    label_episode,
    read_bag_events,
    read_episode_info,
    read_outcome,
)
from cosmos_policy_ros.recording.recorder import (
    EpisodeRecorder,
    RecorderStats,
    install_signal_handlers,
)
from cosmos_policy_ros.recording.recovery import RecoveryResult, is_bag_closed, recover

__all__ = [
    'EPISODE_EVENT_TYPE', 'EpisodeOutcome', 'EpisodeRecorder', 'RecorderError', 'RecorderStats',
    'RecoveryResult', 'build_typestore', 'find_msg_dir', 'install_signal_handlers', 'is_bag_closed',
    'label_episode', 'read_bag_events', 'read_episode_info', 'read_outcome', 'recover',
]
