"""In-process rclpy harness: spin nodes in a background thread, publish, collect, wait."""
from __future__ import annotations

import threading
import time
from collections import defaultdict

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter


def params(**values) -> list[Parameter]:
    return [Parameter(name, value=value) for name, value in values.items()]


class Harness:
    """Spins `nodes` plus a probe node on one SingleThreadedExecutor (rclpy 9's
    MultiThreadedExecutor with two nodes was seen to stop running callbacks in this harness).
    With start=False, set up publishers and wait for discovery (`wait_for_subscribers`)
    first, then call start(), so nothing published early is lost."""

    def __init__(self, context, *nodes, start: bool = True):
        self.context = context
        self.probe = rclpy.create_node("test_probe", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.nodes = [self.probe, *nodes]
        for node in self.nodes:
            self.executor.add_node(node)
        self.received: dict[str, list] = defaultdict(list)
        self._lock = threading.Lock()
        self.spin_error: Exception | None = None
        self._thread = threading.Thread(target=self._spin, daemon=True)
        if start:
            self.start()

    def start(self):
        self._thread.start()

    def wait_for_subscribers(self, topic: str, timeout: float = 10.0):
        """Before start(): wait until DDS discovery matched a subscriber of `topic`."""
        assert not self._thread.is_alive(), "call before start()"
        self.wait_for(lambda: self.probe.count_subscribers(topic) > 0, timeout, f"a subscriber of {topic}")

    def _spin(self):
        try:
            self.executor.spin()
        except Exception as exc:  # noqa: BLE001 - reported by wait_for; shutdown errors are expected
            self.spin_error = exc

    def collect(self, msg_type, topic, qos=10):
        self.probe.create_subscription(msg_type, topic, lambda m, t=topic: self._store(t, m), qos)

    def _store(self, topic, msg):
        with self._lock:
            self.received[topic].append((time.monotonic(), msg))

    def messages(self, topic):
        with self._lock:
            return [m for _, m in self.received[topic]]

    def clear(self, topic):
        with self._lock:
            self.received[topic].clear()

    def wait_for(self, predicate, timeout=10.0, what="condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.spin_error is not None:
                raise AssertionError(f"a node callback raised: {self.spin_error!r}") from self.spin_error
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def now_ns(self):
        return self.probe.get_clock().now().nanoseconds

    def close(self):
        self.executor.shutdown(timeout_sec=2.0)
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        for node in self.nodes:
            close = getattr(node, "close", None)
            if close:
                close()
            node.destroy_node()
