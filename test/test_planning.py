"""Best-of-N planning without ROS: aggregation, choice, fallback rules, deadline, tiny model."""
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from cosmos_policy_ros.config import ConfigError, load_config
from cosmos_policy_ros.model.cosmos_policy import OutcomePrediction
from cosmos_policy_ros.control.planning import (
    ModelPlanner,
    PendingRequests,
    Planner,
    PlanningSettings,
    aggregate_over_depth,
    aggregate_values,
    best_of_n,
    decide,
    make_model_planner,
)
from cosmos_policy_ros.types import Observation, PolicyOutput

HORIZON, DOF = 50, 14
CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")


def make_obs(seed=0):
    rng = np.random.default_rng(seed)
    images = {cam: rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for cam in CAMERAS}
    return Observation(stamp_ns=7, images=images, joint_positions=rng.uniform(-0.3, 0.3, DOF),
                       task="transfer the cube")


# ---------------------------------------------------------------------------- aggregation
def test_majority_mean_by_hand():
    values = np.array([
        [0.9, 0.8, 0.01, 0.02, 0.7],   # 3/5 predict success -> mean of those: 0.8
        [0.9, 0.01, 0.02, 0.03, 0.6],  # 2/5 -> the majority predicts failure: 0
        [0.5, 0.01, 0.3, 0.04, 0.0],   # 2/5 -> 0 (even though the plain mean is 0.17)
        [0.2, 0.2, 0.2, 0.2, 0.2],     # all succeed -> 0.2
    ])
    np.testing.assert_allclose(aggregate_values(values, "majority_mean"), [0.8, 0.0, 0.0, 0.2])
    # Exactly half counts as a majority (>= 0.5), as upstream.
    np.testing.assert_allclose(aggregate_values(np.array([[0.6, 0.01]]), "majority_mean"), [0.6])
    # The threshold is strict: 0.05 itself is a failure vote.
    np.testing.assert_allclose(aggregate_values(np.array([[0.05, 0.05, 0.4]]), "majority_mean"), [0.0])


def test_majority_mean_pools_future_and_value_samples():
    # [N=2, S=3, V=5]: the 15 members of a candidate are pooled, not averaged per future state.
    rng = np.random.default_rng(0)
    values = rng.uniform(0.1, 1, (2, 3, 5))
    values[0, 0, :] = 0.0      # one future state predicts failure in all its value samples
    values[1, :2, :] = 0.0     # two of three future states do -> 5/15 success, minority
    out = aggregate_values(values, "majority_mean")
    np.testing.assert_allclose(out[0], values[0, 1:].mean())
    assert out[1] == 0.0


def test_other_aggregations_and_depth():
    v = np.array([[0.2, 0.4, 0.6], [0.0, 0.0, 0.9]])
    np.testing.assert_allclose(aggregate_values(v, "mean"), [0.4, 0.3])
    np.testing.assert_allclose(aggregate_values(v, "lcb"), [0.4 - 0.2, max(0.0, 0.3 - np.std(v[1], ddof=1))])
    np.testing.assert_allclose(aggregate_values(v, "success_vote"), [1.0, 1 / 3])
    with pytest.raises(ValueError, match="unknown value aggregation"):
        aggregate_values(v, "median")
    d = np.array([[0.1, 0.5, 0.3], [0.2, 0.2, 0.8]])
    np.testing.assert_allclose(aggregate_over_depth(d, "use_last_value"), [0.3, 0.8])
    np.testing.assert_allclose(aggregate_over_depth(d, "average"), [0.3, 0.4])


# ---------------------------------------------------------------------------- fake models
class FakePlanningModel:
    """Value of a candidate = 1 - distance of its last action from ``target`` (noisy members)."""

    def __init__(self, target):
        self.target = np.asarray(target)
        self.config = SimpleNamespace(joint_names=tuple(f"j{i}" for i in range(DOF)), camera_names=CAMERAS,
                                      chunk_size=HORIZON)
        self.max_batch_size = None
        self.calls = []

    def predict_outcomes(self, observation, action_chunks, num_future_samples=1, num_value_samples=1, seed=None,
                         decode_future_images=False, action_latents=None, ensemble_steps="linspace"):
        self.calls.append(action_chunks.shape)
        self.latents_seen = action_latents
        n = action_chunks.shape[0]
        rng = np.random.default_rng(seed)
        score = 1.0 - np.abs(action_chunks[:, -1] - self.target).mean(axis=1)
        values = np.clip(score[:, None, None] + rng.normal(0, 0.01, (n, num_future_samples, num_value_samples)), 0, 1)
        future = np.repeat(action_chunks[:, -1][:, None], num_future_samples, axis=1)
        return OutcomePrediction(future_joint_positions=future, values=values)


class FakePolicy:
    seed = 0

    def __init__(self, finals):
        self.finals = finals
        self.calls = 0

    def sample_candidates(self, observation, num_candidates, seed=None):
        self.calls += 1
        return [PolicyOutput(actions=np.full((HORIZON, DOF), self.finals[i]), predicted_value=0.5)
                for i in range(num_candidates)]


def test_model_planner_picks_best_candidate_under_fake_model():
    model = FakePlanningModel(target=np.full(DOF, 0.3))
    planner = ModelPlanner(model, num_future_samples=3, num_value_samples=5)
    assert isinstance(planner, Planner)
    finals = [0.0, 0.1, 0.28, 0.9, -0.5]
    candidates = np.stack([np.full((HORIZON, DOF), f) for f in finals])
    scores = planner.score(make_obs(), candidates)
    assert model.calls == [(5, HORIZON, DOF)]  # one batched call for all candidates x ensemble
    assert scores.chosen_index == 2
    assert scores.member_values.shape == (5, 3, 5)
    assert scores.candidate_values.shape == (5,) and np.all((0 <= scores.candidate_values) & (scores.candidate_values <= 1))
    np.testing.assert_allclose(scores.future_joint_positions[3], np.full(DOF, 0.9))


def test_best_of_n_returns_chosen_candidate_with_planner_value():
    policy = FakePolicy([0.0, 0.5, 0.29, 0.1])
    planner = ModelPlanner(FakePlanningModel(np.full(DOF, 0.3)), 2, 2)
    decision = best_of_n(policy, planner, make_obs(), num_candidates=4, seed=0)
    assert policy.calls == 1
    assert decision.chosen_index == 2 and not decision.fallback
    np.testing.assert_array_equal(decision.output.actions, np.full((HORIZON, DOF), 0.29))
    assert decision.output.predicted_value == pytest.approx(decision.candidate_values[2])
    np.testing.assert_allclose(decision.output.future_joint_positions, np.full(DOF, 0.29))


def test_ties_keep_candidate_zero_and_bad_answers_fall_back():
    cands = [PolicyOutput(actions=np.full((HORIZON, DOF), float(i))) for i in range(3)]
    assert decide(cands, [0.4, 0.4, 0.1], 0).chosen_index == 0
    for values, index, reason in (([0.1, 0.9], 1, "2 values for 3"), ([0.1, 0.2, 0.9], 3, "out of range"),
                                  (None, None, "no answer")):
        d = decide(cands, values, index)
        assert d.chosen_index == 0 and reason in d.fallback and d.output is cands[0]
    d = decide(cands, fallback="timeout (1 s)")
    assert d.output is cands[0] and d.candidate_values is None


# ---------------------------------------------------------------------------- deadline
def test_deadline_answer_in_time_late_and_timeout():
    pending = PendingRequests()
    pending.open(1)
    threading.Timer(0.05, pending.deliver, args=(1, "answer")).start()
    t0 = time.monotonic()
    assert pending.wait(1, 2.0) == "answer"
    assert time.monotonic() - t0 < 1.0

    pending.open(2)
    t0 = time.monotonic()
    assert pending.wait(2, 0.2, since=t0) is None  # nobody answers: fallback at the deadline
    waited = time.monotonic() - t0
    assert 0.2 <= waited < 0.2 + 0.02, waited  # within one 50 Hz control tick
    assert pending.deliver(2, "late") is False and pending.late_answers == 1
    assert pending.deliver(99, "someone else's") is False and pending.late_answers == 2


def test_deadline_counts_from_send_time():
    pending = PendingRequests()
    pending.open(3)
    sent = time.monotonic() - 0.15  # e.g. serializing the request took 150 ms
    t0 = time.monotonic()
    assert pending.wait(3, 0.2, since=sent) is None
    assert time.monotonic() - t0 < 0.1


# ---------------------------------------------------------------------------- settings
def _config_with(tmp_path, **planning):
    raw = yaml.safe_load(load_config("aloha").path.read_text())
    raw["planning"].update(planning)
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def test_settings_defaults_and_errors(tmp_path):
    s = PlanningSettings.from_config(load_config("aloha"))
    assert (s.num_candidates, s.num_future_samples, s.num_value_samples, s.aggregation) == (8, 3, 5, "majority_mean")
    assert s.checkpoint_path().name == "tiny_cosmos_planning"
    for bad, field in (({"aggregation": "median"}, "planning.aggregation"), ({"search_depth": 3}, "planning.search_depth"),
                       ({"deadline_s": 0}, "planning.deadline_s"), ({"num_candidate": 4}, "unknown key 'num_candidate'; did you mean 'num_candidates'"),
                       ({"num_steps": {"policy": 3}}, "planning.num_steps")):
        with pytest.raises(ConfigError, match=field):
            PlanningSettings.from_config(_config_with(tmp_path, **bad))


# ---------------------------------------------------------------------------- tiny model
@pytest.fixture(scope="module")
def tiny_planner():
    import torch

    torch.set_num_threads(1)  # the machine is shared; more threads only contend
    return make_model_planner(load_config("aloha"), device="cpu")


def test_batched_equals_sequential_on_tiny_model(tiny_planner):
    model = tiny_planner.model
    rng = np.random.default_rng(1)
    candidates = rng.uniform(-0.3, 0.3, (3, model.config.chunk_size, model.config.dof))
    encoded = tiny_planner.encode(make_obs(1))
    batched = ModelPlanner(model, 2, 3, seed=4).score(encoded, candidates)
    sequential = ModelPlanner(model, 2, 3, seed=4, max_batch_size=1).score(encoded, candidates)
    np.testing.assert_allclose(batched.member_values, sequential.member_values, atol=1e-5)
    np.testing.assert_allclose(batched.candidate_values, sequential.candidate_values, atol=1e-5)
    np.testing.assert_allclose(batched.future_joint_positions, sequential.future_joint_positions, atol=1e-5)
    assert batched.chosen_index == sequential.chosen_index
    assert batched.member_values.shape == (3, 2, 3)


def test_tiny_model_imagination_frames(tiny_planner):
    encoded = tiny_planner.encode(make_obs(2))
    frames = tiny_planner.imagine(encoded, np.zeros((tiny_planner.chunk_size, DOF)))
    assert set(frames) == set(CAMERAS)
    assert all(f.shape == (64, 64, 3) and f.dtype == np.uint8 for f in frames.values())


# ---------------------------------------------------------------------------- moved candidates
def test_perturbed_candidates_keep_candidate_zero_and_the_grippers():
    from cosmos_policy_ros.control.planning import perturb_candidates

    rng = np.random.default_rng(0)
    candidates = [PolicyOutput(actions=rng.uniform(-0.3, 0.3, (HORIZON, DOF)), predicted_value=0.5) for _ in range(4)]
    noisy = np.ones(DOF, bool)
    noisy[[6, 13]] = False
    moved = perturb_candidates(candidates, 0.05, noisy, np.random.default_rng(1))
    assert moved[0] is candidates[0]
    for before, after in zip(candidates[1:], moved[1:]):
        shift = after.actions - before.actions
        np.testing.assert_allclose(shift, np.broadcast_to(shift[0], shift.shape))  # one offset per joint
        assert np.all(shift[:, [6, 13]] == 0) and np.abs(shift[0, noisy]).min() > 0
        assert 0.01 < np.abs(shift[0, noisy]).mean() < 0.15
    again = perturb_candidates(candidates, 0.05, noisy, np.random.default_rng(1))
    assert all(np.array_equal(a.actions, b.actions) for a, b in zip(moved, again))  # seeded
    assert perturb_candidates(candidates, 0.0, noisy, np.random.default_rng(1)) == candidates


def test_a_moved_candidate_is_scored_from_its_chunk_not_the_policy_latent():
    import torch

    from cosmos_policy_ros.control.planning import action_latents, perturb_candidates
    from cosmos_policy_ros.model.cosmos_policy import CosmosPolicyOutput

    own = [CosmosPolicyOutput(actions=np.zeros((HORIZON, DOF)), predicted_value=0.5,
                              action_latent=torch.zeros(16, 8, 8)) for _ in range(3)]
    assert action_latents(own) is not None
    moved = perturb_candidates(own, 0.05, np.ones(DOF, bool), np.random.default_rng(0))
    assert moved[0].action_latent is not None and moved[1].action_latent is None
    assert action_latents(moved) is None


def test_candidate_noise_setting_is_checked(tmp_path):
    assert PlanningSettings.from_config(load_config("aloha")).candidate_noise_rad == 0.0
    assert PlanningSettings.from_config(_config_with(tmp_path, candidate_noise_rad=0.05)).candidate_noise_rad == 0.05
    with pytest.raises(ConfigError, match="planning.candidate_noise_rad"):
        PlanningSettings.from_config(_config_with(tmp_path, candidate_noise_rad=-0.1))
