"""In-process rclpy harness: spin nodes in a background thread, publish, collect, wait."""
from __future__ import annotations

import threading
import time
from collections import defaultdict

import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter


def params(**values) -> list[Parameter]:
    return [Parameter(name, value=value) for name, value in values.items()]


class Harness:
    def __init__(self, context, *nodes):
        self.context = context
        self.probe = rclpy.create_node("test_probe", context=context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=context)
        self.nodes = [self.probe, *nodes]
        for node in self.nodes:
            self.executor.add_node(node)
        self.received: dict[str, list] = defaultdict(list)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - executor shutdown during teardown
            pass

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
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def now_ns(self):
        return self.probe.get_clock().now().nanoseconds

    def close(self):
        self.executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=2.0)
        for node in self.nodes:
            close = getattr(node, "close", None)
            if close:
                close()
            node.destroy_node()
