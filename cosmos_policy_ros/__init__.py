"""cosmos_policy_ros: NVIDIA Cosmos Policy on a bimanual ALOHA robot, as ROS 2 nodes.

The rosidl-generated message modules (``cosmos_policy_ros.msg``) may be installed in a
different directory than this source package (a venv build installs them under
``build/``); ``extend_path`` lets both halves of the package be imported as one.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)  # noqa: F821 - module attribute of a package

__version__ = "0.1.0"
