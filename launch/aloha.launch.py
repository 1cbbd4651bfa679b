"""Bimanual ALOHA with Cosmos Policy: `ros2 launch cosmos_policy_ros aloha.launch.py`.

Arguments:
  config_file      robot YAML (default: config/aloha.yaml with the sim, config/aloha_real.yaml
                   without it: Trossen's ROS 2 ALOHA, started with `ros2 launch aloha aloha_bringup.launch.py`)
  use_sim          true: start the MuJoCo sim and run everything on sim time;
                   false: drive the real robot (wall time)
  policy_type      override policy.type (scripted_transfer_cube | replay | cosmos)
  checkpoint       Cosmos checkpoint folder (policy.checkpoint)
  planning         true: start planner_node and plan best-of-N
  planning_checkpoint  planning model folder for planner_node
  record           true: start recorder_node (one MCAP bag per episode)
  output_dir       where recorder_node writes bags
  num_episodes     sim episodes before the sim exits (0: forever)
Remap topics per node with the usual launch remappings, or edit the YAML.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

PACKAGE = "cosmos_policy_ros"
SIM_CONFIG = "aloha.yaml"
REAL_CONFIG = "aloha_real.yaml"
_TRUE, _FALSE = ("true", "1"), ("false", "0")  # what IfCondition accepts, case-insensitive


def _use_sim(context) -> bool:
    value = context.launch_configurations["use_sim"].strip().lower()
    if value not in _TRUE + _FALSE:
        raise ValueError(f"use_sim: expected true or false, got {value!r}")
    return value in _TRUE


def _nodes(context):
    """The nodes, once use_sim and config_file are known: the robot YAML follows use_sim
    unless config_file names one."""
    use_sim = _use_sim(context)
    config_file = context.launch_configurations["config_file"] or os.path.join(
        get_package_share_directory(PACKAGE), "config", SIM_CONFIG if use_sim else REAL_CONFIG)
    planning = LaunchConfiguration("planning")
    nodes = [
        Node(package=PACKAGE, executable="policy_node", name="policy_node", output="screen",
             parameters=[{
                 "config_file": config_file,
                 "use_sim_time": use_sim,
                 "policy_type": LaunchConfiguration("policy_type"),
                 "checkpoint": LaunchConfiguration("checkpoint"),
                 "planning": ParameterValue(planning, value_type=bool),
             }]),
        Node(package=PACKAGE, executable="chunk_executor_node", name="chunk_executor_node", output="screen",
             parameters=[{"config_file": config_file, "use_sim_time": use_sim}]),
        Node(package=PACKAGE, executable="planner_node", name="planner_node", output="screen",
             condition=IfCondition(planning),
             parameters=[{"config_file": config_file, "use_sim_time": use_sim,
                          "checkpoint": LaunchConfiguration("planning_checkpoint")}]),
        Node(package=PACKAGE, executable="recorder_node", name="recorder_node", output="screen",
             condition=IfCondition(LaunchConfiguration("record")),
             parameters=[{"config_file": config_file, "use_sim_time": use_sim,
                          "output_dir": LaunchConfiguration("output_dir")}]),
    ]
    if use_sim:
        nodes.append(Node(package=PACKAGE, executable="sim_node", name="sim_node", output="screen",
                          parameters=[{"config_file": config_file,
                                       "num_episodes": ParameterValue(LaunchConfiguration("num_episodes"),
                                                                      value_type=int)}]))
    return nodes


def generate_launch_description():
    arguments = [
        DeclareLaunchArgument("config_file", default_value="",
                              description=f"robot YAML (empty: config/{SIM_CONFIG} with use_sim, "
                                          f"config/{REAL_CONFIG} without)"),
        DeclareLaunchArgument("use_sim", default_value="true", description="start the MuJoCo ALOHA sim"),
        DeclareLaunchArgument("policy_type", default_value="", description="override policy.type"),
        DeclareLaunchArgument("checkpoint", default_value="", description="Cosmos checkpoint folder"),
        DeclareLaunchArgument("planning", default_value="false", description="best-of-N planning"),
        DeclareLaunchArgument("planning_checkpoint", default_value="", description="planning model folder"),
        DeclareLaunchArgument("record", default_value="false", description="record rollouts to MCAP"),
        DeclareLaunchArgument("output_dir", default_value="rollouts", description="recorder output folder"),
        DeclareLaunchArgument("num_episodes", default_value="0", description="sim episodes (0: forever)"),
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=_nodes)])
