"""Start the node graph as separate processes without `ros2 launch` (which cannot be
installed from wheels): the `demo` command and the cross-process tests use this; the
launch file starts the same executables with the same parameters on a ROS machine.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

NODE_MODULES = {
    "sim_node": "cosmos_policy_ros.nodes.sim_node",
    "policy_node": "cosmos_policy_ros.nodes.policy_node",
    "chunk_executor_node": "cosmos_policy_ros.nodes.chunk_executor_node",
    "planner_node": "cosmos_policy_ros.nodes.planner_node",
    "recorder_node": "cosmos_policy_ros.nodes.recorder_node",
}


def ros_env(domain_id: int | None = None) -> dict[str, str]:
    """Environment for a private graph on this machine: own DDS domain, loopback only."""
    env = dict(os.environ)
    # SystemRandom: libraries seed the global `random` (two runs of one command drew the same
    # domain and, run side by side, would have joined each other's graph).
    env["ROS_DOMAIN_ID"] = str(domain_id if domain_id is not None else random.SystemRandom().randint(1, 100))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("MUJOCO_GL", "egl")
    env.setdefault("PYOPENGL_PLATFORM", env["MUJOCO_GL"])
    env["PYTHONUNBUFFERED"] = "1"
    # Torch threads per process: the graph shares the machine's cores.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@dataclass
class NodeProcess:
    name: str
    process: subprocess.Popen
    log_path: Path


@dataclass
class Graph:
    """A set of node processes sharing one ROS domain; stop() ends them (SIGINT, then kill)."""

    env: dict[str, str]
    log_dir: Path
    nodes: dict[str, NodeProcess] = field(default_factory=dict)

    def start(self, name: str, params: dict[str, object], executable: str | None = None,
              remaps: dict[str, str] | None = None) -> NodeProcess:
        module = NODE_MODULES[executable or name]
        args = [sys.executable, "-m", module, "--ros-args", "-r", f"__node:={name}"]
        for key, value in params.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            args += ["-p", f"{key}:={value}"]
        for src, dst in (remaps or {}).items():
            args += ["-r", f"{src}:={dst}"]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        log = open(log_path, "w")
        proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        node = NodeProcess(name, proc, log_path)
        self.nodes[name] = node
        return node

    def stop(self, name: str, sig: int = signal.SIGINT, timeout_s: float = 10.0) -> int | None:
        node = self.nodes.pop(name, None)
        if node is None:
            return None
        if node.process.poll() is None:
            node.process.send_signal(sig)
            try:
                node.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
        return node.process.returncode

    def stop_all(self) -> None:
        for name in list(self.nodes):
            self.stop(name)

    def wait(self, name: str, timeout_s: float, poll=None) -> int | None:
        """Wait for one node to exit; None on timeout. Fails fast if another node died.
        ``poll()``, when given, is called while waiting (e.g. to print progress)."""
        deadline = time.monotonic() + timeout_s
        node = self.nodes[name]
        while time.monotonic() < deadline:
            if poll is not None:
                poll()
            code = node.process.poll()
            if code is not None:
                return code
            for other in self.nodes.values():
                if other is not node and other.process.poll() not in (None, 0):
                    raise RuntimeError(f"{other.name} exited with code {other.process.returncode}; "
                                       f"log:\n{tail(other.log_path)}")
            time.sleep(0.2)
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop_all()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
