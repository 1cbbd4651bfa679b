"""planner_node as a client on another host sees it: the real node in its own process (tiny
planning model), requests published from this process in a private ROS domain.

One scenario, in order: requests it cannot score are answered ok=false naming the field,
and a valid one afterwards is still planned; a burst of 20 requests back to back leaves at
most one waiting and the newest is planned next; a request whose deadline has passed when
the planner would start it is answered "expired" without computing.
"""
import re
import threading
import time

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("cosmos_policy_ros.msg")

from test_plan_requests import make_request, set_positions  # noqa: E402

from cosmos_policy_ros.config import load_config  # noqa: E402
from cosmos_policy_ros.nodes.launcher import Graph, ros_env, tail  # noqa: E402
from cosmos_policy_ros.nodes.messages import seconds_to_duration  # noqa: E402

HORIZON = 50  # the tiny planning model's chunk size
N = 4
BURST = 20


class Client:
    """A bare PlanRequest publisher + PlanResult subscriber, recording when answers arrive."""

    def __init__(self, context):
        from rclpy.executors import SingleThreadedExecutor

        from cosmos_policy_ros.msg import PlanRequest, PlanResult
        from cosmos_policy_ros.nodes.common import reliable_qos

        self.node = rclpy.create_node("plan_request_client", context=context)
        self.pub = self.node.create_publisher(PlanRequest, "planner/request", reliable_qos(BURST))
        self.answers = {}  # request_id -> [(PlanResult, monotonic receipt time)]
        self.sent = {}
        self._lock = threading.Lock()
        self.node.create_subscription(PlanResult, "planner/result", self._on_result, reliable_qos(50))
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_result(self, msg):
        with self._lock:
            self.answers.setdefault(int(msg.request_id), []).append((msg, time.monotonic()))

    def send(self, msg, request_id, frame_id=""):
        msg.request_id = request_id
        msg.header.frame_id = frame_id
        self.sent[request_id] = time.monotonic()
        self.pub.publish(msg)

    def wait(self, request_id, timeout_s, graph):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if request_id in self.answers:
                    return self.answers[request_id][0][0]
            assert graph.nodes["planner_node"].process.poll() is None, tail(graph.nodes["planner_node"].log_path)
            time.sleep(0.01)
        raise AssertionError(f"no answer to request {request_id} in {timeout_s} s:\n"
                             f"{tail(graph.nodes['planner_node'].log_path)}")


@pytest.fixture
def planner_and_client(tmp_path, monkeypatch):
    raw = yaml.safe_load(load_config("aloha").path.read_text())
    raw["planning"].update(num_candidates=N, num_future_samples=2, num_value_samples=2, publish_imagination=False)
    config_path = tmp_path / "robot.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    config = load_config(config_path)

    env = ros_env()
    for key in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE"):
        monkeypatch.setenv(key, env[key])
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]))
    client = Client(context)
    graph = Graph(env, tmp_path / "logs")
    graph.start("planner_node", {"config_file": str(config_path)})
    try:
        # The request subscription exists once the model is loaded.
        deadline = time.monotonic() + 60.0
        while client.pub.get_subscription_count() == 0:
            assert time.monotonic() < deadline, tail(graph.nodes["planner_node"].log_path)
            assert graph.nodes["planner_node"].process.poll() is None, tail(graph.nodes["planner_node"].log_path)
            time.sleep(0.1)
        yield graph, client, config
    finally:
        graph.stop_all()
        client.executor.shutdown(timeout_sec=2.0)
        client.node.destroy_node()
        rclpy.try_shutdown(context=context)


def bad_requests(config):
    """(what is wrong, field named in the answer, request)."""
    cases = []
    msg = make_request(config, n=N, horizon=HORIZON)
    msg.joint_positions = np.full(config.dof, np.nan)
    cases.append(("joint positions all NaN", "joint_positions", msg))
    msg = make_request(config, n=N, horizon=HORIZON)
    set_positions(msg.candidates[1], np.full((HORIZON, config.dof), np.nan))
    cases.append(("a candidate all NaN", "candidates[1].positions", msg))
    msg = make_request(config, n=N, horizon=HORIZON)
    positions = np.asarray(msg.candidates[2].positions).reshape(HORIZON, config.dof)
    positions[10, 3] = 1e9
    set_positions(msg.candidates[2], positions)
    cases.append(("a candidate at 1e9 rad", "candidates[2].positions", msg))
    cases.append(("17 candidates", "candidates", make_request(config, n=17, horizon=HORIZON)))
    msg = make_request(config, n=N, horizon=HORIZON)
    msg.images[0].encoding = "yuv422"
    cases.append(("unknown encoding", "images[0]", msg))
    cases.append(("unknown task", "task", make_request(config, n=N, horizon=HORIZON, task="make coffee")))
    return cases


def test_refuses_what_it_cannot_score_and_never_falls_behind(planner_and_client):
    graph, client, config = planner_and_client

    # Bad requests: each answered ok=false at once, naming the field; the node keeps running.
    for i, (what, field, msg) in enumerate(bad_requests(config), start=1):
        client.send(msg, i)
        answer = client.wait(i, 20.0, graph)
        assert not answer.ok, what
        assert answer.message.startswith(f"refused: {field}"), (what, answer.message)
        assert list(answer.candidate_values) == [], what
        assert answer.compute_time < 0.5, (what, answer.compute_time)  # no model work

    # A valid request afterwards is planned as before: one value per candidate.
    client.send(make_request(config, n=N, horizon=HORIZON), 50)
    answer = client.wait(50, 60.0, graph)
    assert answer.ok, answer.message
    assert len(answer.candidate_values) == N
    assert answer.chosen_index == int(np.argmax(answer.candidate_values))
    assert all(0.0 <= v <= 1.0 for v in answer.candidate_values)

    # A burst of 20 from one client: the older ones superseded, the newest planned next.
    ids = list(range(101, 101 + BURST))
    requests = [make_request(config, n=N, horizon=HORIZON, seed=i) for i in ids]
    for request_id, msg in zip(ids, requests):
        msg.deadline = seconds_to_duration(30.0)
        client.send(msg, request_id)
    newest = client.wait(ids[-1], 60.0, graph)
    assert newest.ok and len(newest.candidate_values) == N, newest.message
    time.sleep(0.5)  # any straggling answer
    with client._lock:
        answers = {i: list(client.answers.get(i, [])) for i in ids}
    assert all(len(a) == 1 for a in answers.values()), {i: len(a) for i, a in answers.items()}  # one answer each
    planned = [i for i in ids if answers[i][0][0].ok]
    superseded = [i for i in ids if answers[i][0][0].message.startswith("superseded")]
    assert sorted(planned + superseded) == ids, {i: answers[i][0][0].message for i in ids}
    # The newest waits for at most the request being planned when it arrived, then one planning time.
    newest_at = answers[ids[-1]][0][1]
    before = [answers[i][0][1] for i in planned[:-1]]
    free_at = max([client.sent[ids[-1]]] + [t for t in before if t < newest_at])
    planning_s = newest.compute_time
    after_free_s = newest_at - free_at
    latency_s = newest_at - client.sent[ids[-1]]
    assert after_free_s <= planning_s + 0.3, (after_free_s, planning_s)
    assert len(planned) <= 3, planned  # the one in progress, the newest, at most one more on a slow start
    print(f"burst of {BURST}: planned {planned}, superseded {len(superseded)}; newest answered "
          f"{latency_s:.2f} s after sending, {after_free_s:.2f} s after the planner was free "
          f"(its planning time {planning_s:.2f} s)")

    # A request whose deadline has passed when the planner would start it: "expired", nothing
    # computed (1 µs: it has always passed by the time the worker takes it); the node goes on.
    late = make_request(config, n=N, horizon=HORIZON, seed=2)
    late.deadline = seconds_to_duration(1e-6)
    client.send(late, 200, frame_id="client_b")
    expired = client.wait(200, 30.0, graph)
    assert not expired.ok and expired.message.startswith("expired"), expired.message
    assert expired.compute_time == 0.0 and list(expired.candidate_values) == []
    client.send(make_request(config, n=N, horizon=HORIZON), 201, frame_id="client_b")
    assert client.wait(201, 60.0, graph).ok

    # The planner's own account: per-reason counts and a backlog that never exceeded one.
    log_path = graph.nodes["planner_node"].log_path
    graph.stop("planner_node")
    log = log_path.read_text()
    final = re.findall(r"final: requests (\{.*?\}), max backlog (\d+)", log)
    assert final, tail(log_path)
    counts, max_backlog = final[-1]
    assert int(max_backlog) <= 1, final[-1]
    for key in ("'refused joint_positions': 1", "'refused candidates.positions': 2", "'refused candidates': 1",
                "'refused images': 1", "'refused task': 1", f"'superseded': {len(superseded)}", "'expired': 1"):
        assert key in counts, (key, counts)
    print(f"planner final: requests {counts}, max backlog {max_backlog}")


def test_node_answers_a_malformed_request_in_process_and_keeps_its_counts(tmp_path):
    """The node's callback without a graph: a request whose fields validation did not foresee
    is refused (not raised into the executor), and a valid one is planned by the worker."""
    from types import SimpleNamespace

    from rclpy.parameter import Parameter

    from cosmos_policy_ros.nodes.planner_node import PlannerNode

    config = load_config("aloha")
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=99)
    node = PlannerNode(context=context, parameter_overrides=[Parameter("config_file", value=str(config.path))])
    answers = []
    node._answer = lambda msg, ok, message="", compute_s=0.0, scores=None: answers.append((msg.request_id, ok, message))
    try:
        broken = make_request(config, n=2, horizon=HORIZON)
        broken = SimpleNamespace(**{f: getattr(broken, f) for f in ("header", "request_id", "task", "deadline",
                                                                     "joint_positions", "camera_names", "images")},
                                 candidates=[SimpleNamespace(chunk_id=0)])  # a candidate without fields
        node._on_request(broken, {})
        assert answers[-1][:2] == (7, False) and answers[-1][2].startswith("refused: request: AttributeError")
        node._on_request(make_request(config, n=2, horizon=HORIZON), {"publisher_gid": None})
        deadline = time.monotonic() + 60.0
        while len(answers) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert answers[-1][:2] == (7, True), answers
        assert dict(node.stats.counts) == {"refused request": 1, "planned": 1}
    finally:
        node.close()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_planning_client_sends_the_raw_action_latents_and_its_name(rclpy_context):
    """PlanRequest carries each candidate's raw action latent frame ([N, C, h, w]) and the
    client's node name (so answers to another policy node are ignored)."""
    import torch
    from rclpy.node import Node

    from cosmos_policy_ros.control.policies import make_cosmos_policy
    from cosmos_policy_ros.control.planning import sample_candidates
    from cosmos_policy_ros.nodes.planning_client import PlanningClient
    from cosmos_policy_ros.nodes.plan_requests import RequestRules, validate_request
    from cosmos_policy_ros.types import Observation

    torch.set_num_threads(1)
    config = load_config("aloha", {"planning.enabled": True, "policy.type": "cosmos"})
    policy = make_cosmos_policy(str(config.planning.checkpoint_path().parent / "tiny_cosmos"), "torch", 0, config)
    node = Node("latent_client", context=rclpy_context)
    try:
        client = PlanningClient(node, config, policy)
        rng = np.random.default_rng(0)
        obs = Observation(stamp_ns=10, images={c: rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
                                               for c in ("cam_high", "cam_left_wrist", "cam_right_wrist")},
                          joint_positions=np.full(14, 0.1), task="transfer the cube")
        candidates = sample_candidates(policy, obs, 3, 0)
        msg = client._request_msg(5, obs, candidates)
        assert msg.header.frame_id == "/latent_client"
        shape = tuple(msg.action_latents_shape)
        assert shape[0] == 3 and len(msg.action_latents) == int(np.prod(shape))
        np.testing.assert_allclose(np.asarray(msg.action_latents).reshape(shape)[1],
                                   candidates[1].action_latent, rtol=1e-6)
        rules = RequestRules.from_config(config, 16, config.joint_names, policy.config.camera_names, 50)
        try:
            inputs = validate_request(msg, rules)
        except Exception as exc:  # the tiny random policy's chunks may leave the limits
            assert "positions" in str(exc)
        else:
            assert inputs.action_latents.shape == shape
        client.close()
    finally:
        node.destroy_node()
