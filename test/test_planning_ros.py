"""Planning across processes with real rclpy: planner_node (own process, tiny planning model)
and the policy side's PlanningClient (this process) in a private ROS domain.

One scenario, in order: planning on (the planner chooses), planner killed (fallback to
candidate 0 within deadline + one control tick), planner restarted (used again without
restarting the client).
"""
import signal
import threading
import time

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("cosmos_policy_ros.msg")

from cosmos_policy_ros.config import load_config  # noqa: E402
from cosmos_policy_ros.nodes.launcher import Graph, ros_env, tail  # noqa: E402
from cosmos_policy_ros.types import Observation, PolicyOutput  # noqa: E402

DEADLINE_S = 2.0
CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")


GRIPPERS = [6, 13]  # normalized opening in [0, 1]: the planner refuses positions outside the limits


class RandomCandidatePolicy:
    """Stands in for the policy model: N distinct random chunks in one call."""

    seed = 0

    def sample_candidates(self, observation, num_candidates, seed=None):
        rng = np.random.default_rng(seed)
        outputs = []
        for _ in range(num_candidates):
            actions = rng.uniform(-0.3, 0.3, (50, 14))
            actions[:, GRIPPERS] += 0.5
            outputs.append(PolicyOutput(actions=actions, predicted_value=0.5))
        return outputs


def make_obs():
    rng = np.random.default_rng(0)
    joints = rng.uniform(-0.3, 0.3, 14)
    joints[GRIPPERS] += 0.5
    return Observation(stamp_ns=1_000_000_000, task="transfer the cube", joint_positions=joints,
                       images={cam: rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for cam in CAMERAS})


def planning_config(tmp_path, **planning):
    """config/aloha.yaml with planning on and ``planning`` overrides, written to tmp_path."""
    raw = yaml.safe_load(load_config("aloha").path.read_text())
    raw["planning"].update(enabled=True, **planning)
    (tmp_path / "robot.yaml").write_text(yaml.safe_dump(raw))
    return load_config(tmp_path / "robot.yaml")


def private_node(monkeypatch, name):
    """A node in a fresh rclpy context on a private domain (this process joins it), and its env."""
    env = ros_env()
    for key in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE"):
        monkeypatch.setenv(key, env[key])
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]))
    return rclpy.create_node(name, context=context), context, env


@pytest.fixture
def graph_and_client(tmp_path, monkeypatch):
    from rclpy.executors import MultiThreadedExecutor
    from sensor_msgs.msg import Image

    from cosmos_policy_ros.nodes.common import reliable_qos
    from cosmos_policy_ros.nodes.planning_client import PlanningClient

    config = planning_config(tmp_path, num_candidates=4, num_future_samples=2, num_value_samples=2,
                             deadline_s=DEADLINE_S)
    node, context, env = private_node(monkeypatch, "policy_side")
    client = PlanningClient(node, config, RandomCandidatePolicy())
    imagined = []
    node.create_subscription(Image, "planner/imagination/cam_high", imagined.append, reliable_qos(2))
    executor = MultiThreadedExecutor(num_threads=2, context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    graph = Graph(env, tmp_path / "logs")
    try:
        yield graph, client, config, imagined
    finally:
        graph.stop_all()
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def plan_until_planned(graph, client, timeout_s):
    """Plan repeatedly (as the policy node would) until the planner answers one."""
    before = client.stats.planned
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        client.plan(make_obs())
        if client.stats.planned > before:
            return client.last_decision
        code = graph.nodes["planner_node"].process.poll()
        assert code is None, f"planner_node exited ({code}):\n{tail(graph.nodes['planner_node'].log_path)}"
        time.sleep(0.1)
    raise AssertionError(f"planner never answered in {timeout_s} s:\n{tail(graph.nodes['planner_node'].log_path)}")


def test_planning_on_killed_restarted(graph_and_client):
    graph, client, config, imagined = graph_and_client
    tick_s = config.control_period_s
    params = {"config_file": str(config.path)}

    # Planning on: the planner's choice is executed.
    graph.start("planner_node", params)
    decision = plan_until_planned(graph, client, timeout_s=40.0)
    assert not decision.fallback
    assert decision.candidate_values.shape == (4,)
    assert decision.chosen_index == int(np.argmax(decision.candidate_values))
    assert decision.output.predicted_value == pytest.approx(decision.candidate_values[decision.chosen_index], abs=1e-6)
    wait_until = time.monotonic() + 10.0
    while not imagined and time.monotonic() < wait_until:
        time.sleep(0.05)
    assert imagined, "no imagined frame on planner/imagination/cam_high"
    assert (imagined[-1].encoding, imagined[-1].height, imagined[-1].width) == ("rgb8", 64, 64)

    # Planner killed: candidate 0 within deadline + one control tick.
    graph.stop("planner_node", sig=signal.SIGKILL)
    waits = []
    for _ in range(2):
        started = time.monotonic()
        output = client.plan(make_obs())
        total = time.monotonic() - started
        assert client.last_decision.fallback and client.last_decision.chosen_index == 0
        np.testing.assert_array_equal(output.actions, RandomCandidatePolicy().sample_candidates(None, 4, 0)[0].actions)
        waits.append(client.stats.last_wait_s)
        assert client.stats.last_wait_s <= DEADLINE_S + tick_s, client.stats.last_wait_s
        assert total <= DEADLINE_S + tick_s + 0.5, total  # + sampling and message building
    print(f"fallback waits after kill: {[round(w, 3) for w in waits]} s "
          f"(deadline {DEADLINE_S} s, tick {tick_s * 1e3:.0f} ms); reasons {dict(client.stats.fallbacks)}")

    # Planner restarted: picked up again by the same client.
    graph.start("planner_node", params)
    decision = plan_until_planned(graph, client, timeout_s=40.0)
    assert not decision.fallback and decision.candidate_values.shape == (4,)


def test_moved_candidates_reach_the_planner_with_candidate_zero_unchanged(tmp_path, monkeypatch):
    """planning.candidate_noise_rad: the request carries candidate 0 as sampled and candidates
    1.. moved on the arm joints only, within the limits; the fallback still runs candidate 0."""
    from rclpy.executors import SingleThreadedExecutor

    from cosmos_policy_ros.control.safety import JointLimits
    from cosmos_policy_ros.msg import PlanRequest
    from cosmos_policy_ros.nodes.common import reliable_qos
    from cosmos_policy_ros.nodes.planning_client import PlanningClient

    config = planning_config(tmp_path, num_candidates=4, deadline_s=0.3, candidate_noise_rad=0.05)
    node, context, _ = private_node(monkeypatch, "policy_side_noise")
    requests = []
    node.create_subscription(PlanRequest, "planner/request", requests.append, reliable_qos(2))
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        client = PlanningClient(node, config, RandomCandidatePolicy())
        sampled = RandomCandidatePolicy().sample_candidates(None, 4, client.seed)
        deadline = time.monotonic() + 10.0
        while not requests and time.monotonic() < deadline:
            output = client.plan(make_obs())
        assert requests, "no PlanRequest published"
        np.testing.assert_array_equal(output.actions, sampled[0].actions)  # no planner: candidate 0
        chunks = [np.asarray(c.positions).reshape(-1, 14) for c in requests[-1].candidates]
        np.testing.assert_array_equal(chunks[0], sampled[0].actions)
        arms = [j for j in range(14) if j not in GRIPPERS]
        for chunk, own in zip(chunks[1:], sampled[1:]):
            shift = chunk - own.actions
            assert np.all(shift[:, GRIPPERS] == 0)
            assert np.abs(shift[:, arms]).mean() > 0.005
        limits = JointLimits.from_robot_config(config)
        assert all(np.all(c >= limits.lower - 1e-9) and np.all(c <= limits.upper + 1e-9) for c in chunks)
    finally:
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
