"""Thin ROS 2 nodes: each translates messages and parameters to a plain module."""
