"""What every node shares: the config parameter, QoS profiles, and a main() wrapper."""
from __future__ import annotations

import logging
import signal
import sys
from typing import Callable

from cosmos_policy_ros.config import ConfigError, RobotConfig, load_config


def sensor_qos(depth: int = 2):
    """Best effort, volatile (the camera drivers' QoS), keeping the last `depth` samples."""
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)


def reliable_qos(depth: int = 10):
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)


class RosLogHandler(logging.Handler):
    """Forwards the package's Python ``logging`` records (model, control, recording, learning
    modules log through ``logging`` only) to a node's ROS logger, so they reach the console
    and /rosout like the node's own lines; after shutdown they go to stderr."""

    def __init__(self, node) -> None:
        super().__init__(logging.INFO)
        self.node = node
        self.node_name = node.get_name()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.name}: {record.getMessage()}"
        except Exception:  # noqa: BLE001 - a malformed record must not break the caller
            return
        try:
            if not self.node.context.ok():
                raise RuntimeError("context shut down")
            logger = self.node.get_logger()
            if record.levelno >= logging.ERROR:
                logger.error(text)
            elif record.levelno >= logging.WARNING:
                logger.warning(text)
            else:
                logger.info(text)
        except Exception:  # noqa: BLE001 - the node is gone: never raise into library code
            print(f"[{record.levelname}] [{self.node_name}]: {text}", file=sys.stderr, flush=True)


def forward_package_logging(node) -> RosLogHandler:
    """Attach a RosLogHandler for ``node`` to the package's logger (one per process)."""
    package_logger = logging.getLogger("cosmos_policy_ros")
    for handler in list(package_logger.handlers):
        if isinstance(handler, RosLogHandler):
            package_logger.removeHandler(handler)
    handler = RosLogHandler(node)
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    return handler


def declare_config(node, extra_overrides: dict[str, tuple[str, str]] | None = None) -> RobotConfig:
    """Declare `config_file` (+ typed override parameters) and load the robot YAML.

    extra_overrides: parameter name -> ('section.key', description). Each parameter's default
    is the YAML's value (itself defaulted by the config's settings classes), so a parameter
    set on the command line always wins and no default is written twice. An empty string
    means "not set" (launch files pass "" for arguments the user left out).
    """
    from rcl_interfaces.msg import ParameterDescriptor

    forward_package_logging(node)
    path = node.declare_parameter(
        "config_file", "aloha",
        ParameterDescriptor(description="robot YAML (path, or a name in the package's config/)")).value
    try:
        config = load_config(path)
        overrides = {}
        for param, (dotted, description) in (extra_overrides or {}).items():
            section, _, key = dotted.partition(".")
            default = getattr(getattr(config, section), key)
            value = node.declare_parameter(param, default, ParameterDescriptor(description=description)).value
            if value != default and value != "":
                overrides[dotted] = value
        return load_config(path, overrides) if overrides else config
    except ConfigError as exc:
        node.get_logger().fatal(str(exc))
        raise


def log_info(node, text: str) -> None:
    """Log through the node while its context lives; after shutdown (final statistics in
    close()) rosout is gone, so print the same line instead of failing to publish."""
    if node.context.ok():
        node.get_logger().info(text)
    else:
        print(f"[INFO] [{node.get_name()}]: {text}", flush=True)


def now_ns(node) -> int:
    return node.get_clock().now().nanoseconds


def run_node(make_node: Callable[[], object], args=None) -> int:
    """rclpy.init, build the node, spin until SIGINT/SIGTERM, shut down cleanly.

    One executor thread: every callback here is short or hands work to a thread of its
    own (inference, physics, planning, bag writing). rclpy 9's MultiThreadedExecutor was
    seen to stop dispatching callbacks for a while, which cost a recorder messages."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    rclpy.init(args=args if args is not None else sys.argv)
    node = None
    try:
        node = make_node()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        signal.signal(signal.SIGTERM, lambda *_: rclpy.try_shutdown())
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ConfigError:
        return 2
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close:
                close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
