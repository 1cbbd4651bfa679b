"""Rollout recording to rosbag2 (MCAP): episodes, outcomes, recovery after a kill."""
