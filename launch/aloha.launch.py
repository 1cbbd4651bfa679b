"""Bimanual ALOHA with Cosmos Policy: `ros2 launch cosmos_policy_ros aloha.launch.py`.

Arguments:
  config_file      robot YAML (default: this package's config/aloha.yaml)
  use_sim          true: start the MuJoCo sim and run everything on sim time
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
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

PACKAGE = "cosmos_policy_ros"


def generate_launch_description():
    default_config = os.path.join(get_package_share_directory(PACKAGE), "config", "aloha.yaml")
    config_file = LaunchConfiguration("config_file")
    use_sim = LaunchConfiguration("use_sim")
    planning = LaunchConfiguration("planning")
    use_sim_time = ParameterValue(use_sim, value_type=bool)

    arguments = [
        DeclareLaunchArgument("config_file", default_value=default_config, description="robot YAML"),
        DeclareLaunchArgument("use_sim", default_value="true", description="start the MuJoCo ALOHA sim"),
        DeclareLaunchArgument("policy_type", default_value="", description="override policy.type"),
        DeclareLaunchArgument("checkpoint", default_value="", description="Cosmos checkpoint folder"),
        DeclareLaunchArgument("planning", default_value="false", description="best-of-N planning"),
        DeclareLaunchArgument("planning_checkpoint", default_value="", description="planning model folder"),
        DeclareLaunchArgument("record", default_value="false", description="record rollouts to MCAP"),
        DeclareLaunchArgument("output_dir", default_value="rollouts", description="recorder output folder"),
        DeclareLaunchArgument("num_episodes", default_value="0", description="sim episodes (0: forever)"),
    ]
    nodes = [
        Node(package=PACKAGE, executable="policy_node", name="policy_node", output="screen",
             parameters=[{
                 "config_file": config_file,
                 "use_sim_time": use_sim_time,
                 "policy_type": LaunchConfiguration("policy_type"),
                 "checkpoint": LaunchConfiguration("checkpoint"),
                 "planning": ParameterValue(planning, value_type=bool),
             }]),
        Node(package=PACKAGE, executable="chunk_executor_node", name="chunk_executor_node", output="screen",
             parameters=[{"config_file": config_file, "use_sim_time": use_sim_time}]),
        Node(package=PACKAGE, executable="planner_node", name="planner_node", output="screen",
             condition=IfCondition(planning),
             parameters=[{"config_file": config_file, "use_sim_time": use_sim_time,
                          "checkpoint": LaunchConfiguration("planning_checkpoint")}]),
        Node(package=PACKAGE, executable="recorder_node", name="recorder_node", output="screen",
             condition=IfCondition(LaunchConfiguration("record")),
             parameters=[{"config_file": config_file, "use_sim_time": use_sim_time,
                          "output_dir": LaunchConfiguration("output_dir")}]),
        Node(package=PACKAGE, executable="sim_node", name="sim_node", output="screen",
             condition=IfCondition(use_sim),
             parameters=[{"config_file": config_file,
                          "num_episodes": ParameterValue(LaunchConfiguration("num_episodes"), value_type=int)}]),
    ]
    return LaunchDescription(arguments + nodes)
