"""planner_node's request rules without a ROS graph: each refusal of a PlanRequest it cannot
score, the newest-per-client queue, expiry, statistics keys and planning.max_candidates."""
import threading

import numpy as np
import pytest
import yaml

pytest.importorskip("cosmos_policy_ros.msg")

from cosmos_policy_ros.config import ConfigError, load_config  # noqa: E402
from cosmos_policy_ros.nodes.plan_requests import (  # noqa: E402
    GRIPPER_MEASURED_TOLERANCE,
    LIMIT_TOLERANCE,
    NewestPerClient,
    PlannerStats,
    RequestRefused,
    RequestRules,
    Waiting,
    client_key,
    deadline_passed,
    validate_request,
)
from cosmos_policy_ros.control.planning import PlanningSettings  # noqa: E402
from cosmos_policy_ros.msg import PlanRequest  # noqa: E402
from cosmos_policy_ros.nodes.messages import chunk_to_msg, rgb_to_image_msg, seconds_to_duration  # noqa: E402
from cosmos_policy_ros.types import ActionChunk  # noqa: E402

HORIZON = 6
CAMERAS = ("cam_left_wrist", "cam_right_wrist", "cam_high")
TASKS = {"transfer the cube", "fold the shirt"}


@pytest.fixture(scope="module")
def config():
    return load_config("aloha")


@pytest.fixture(scope="module")
def rules(config):
    return RequestRules.from_config(config, 4, config.joint_names, CAMERAS, HORIZON, tasks=TASKS,
                                    default_task="transfer the cube")


def make_request(config, n=3, joint_order=None, seed=0, task="transfer the cube", horizon=HORIZON):
    """A valid request, as PlanningClient builds one (optionally with permuted joint columns)."""
    rng = np.random.default_rng(seed)
    names = tuple(joint_order or config.joint_names)
    order = [config.joint_names.index(name) for name in names]
    joints = rng.uniform(-0.3, 0.3, config.dof)
    joints[[6, 13]] = 0.5  # grippers, normalized
    msg = PlanRequest()
    msg.request_id = 7
    msg.task = task
    msg.camera_names = list(CAMERAS)
    msg.images = [rgb_to_image_msg(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), 0, cam) for cam in CAMERAS]
    msg.joint_positions = joints[order]
    chunks = []
    for i in range(n):
        positions = np.clip(joints + rng.normal(0, 0.05, (horizon, config.dof)), 0.0, None)
        positions[:, :6] -= 0.1
        chunks.append(chunk_to_msg(ActionChunk(stamp_ns=0, chunk_id=i, joint_names=names,
                                               positions=positions[:, order], control_period_s=0.02)))
    msg.candidates = chunks
    msg.deadline = seconds_to_duration(2.0)
    return msg


def set_positions(chunk_msg, positions):
    chunk_msg.positions = np.asarray(positions, dtype=np.float64).ravel()


def refused(msg, rules) -> RequestRefused:
    with pytest.raises(RequestRefused) as info:
        validate_request(msg, rules)
    return info.value


# ---------------------------------------------------------------------------- valid input
def test_valid_request_becomes_model_inputs_in_model_joint_order(config, rules):
    msg = make_request(config, n=4)
    inputs = validate_request(msg, rules)
    assert inputs.candidates.shape == (4, HORIZON, config.dof)
    np.testing.assert_array_equal(inputs.observation.joint_positions, np.asarray(msg.joint_positions))
    assert sorted(inputs.observation.images) == sorted(CAMERAS)
    assert inputs.observation.images["cam_high"].shape == (24, 32, 3)

    # Columns sent in another order come back in the model's order.
    reversed_names = tuple(reversed(config.joint_names))
    permuted = make_request(config, n=4, joint_order=reversed_names)
    again = validate_request(permuted, rules)
    np.testing.assert_allclose(again.candidates, inputs.candidates)
    np.testing.assert_allclose(again.observation.joint_positions, inputs.observation.joint_positions)


def test_extra_cameras_are_ignored_and_empty_task_means_the_default(config, rules):
    msg = make_request(config, task="")
    msg.camera_names = list(msg.camera_names) + ["cam_low"]
    msg.images = list(msg.images) + [rgb_to_image_msg(np.zeros((4, 4, 3), np.uint8), 0, "cam_low")]
    inputs = validate_request(msg, rules)
    assert "cam_low" not in inputs.observation.images


def test_positions_within_the_tolerance_of_the_limits_are_accepted(config, rules):
    msg = make_request(config, n=1)
    positions = np.asarray(msg.candidates[0].positions).reshape(HORIZON, config.dof)
    positions[0, 6] = 1.0 + LIMIT_TOLERANCE / 2  # gripper a bit past fully open
    set_positions(msg.candidates[0], positions)
    joints = np.asarray(msg.joint_positions)
    joints[1] = rules.lower[1] - LIMIT_TOLERANCE / 2
    msg.joint_positions = joints
    validate_request(msg, rules)


# ---------------------------------------------------------------------------- refusals
def test_non_finite_joint_positions_are_refused(config, rules):
    msg = make_request(config)
    msg.joint_positions = np.full(config.dof, np.nan)
    exc = refused(msg, rules)
    assert exc.field == "joint_positions"
    assert "left_waist = nan is not finite" in str(exc) and "14 bad entries" in str(exc)


def test_joint_positions_outside_the_limits_are_refused(config, rules):
    msg = make_request(config)
    joints = np.asarray(msg.joint_positions)
    joints[9] = rules.upper[9] + 2 * LIMIT_TOLERANCE
    msg.joint_positions = joints
    exc = refused(msg, rules)
    assert exc.field == "joint_positions"
    assert "right_elbow = 1.81 outside limits [-1.76, 1.61]" in str(exc)


def test_a_measured_gripper_past_its_closed_point_is_planned_but_not_a_candidate_there(config, rules):
    # The sim's grippers have read -0.23 and -0.66 (evals: 4 of 180 and 1 of 180 requests
    # refused while the plain policy acted on the same states).
    msg = make_request(config, n=1)
    joints = np.asarray(msg.joint_positions)
    joints[6] = -0.66
    msg.joint_positions = joints
    validate_request(msg, rules)
    joints[6] = -(GRIPPER_MEASURED_TOLERANCE + 0.05)  # beyond any squeeze: a fault
    msg.joint_positions = joints
    exc = refused(msg, rules)
    assert exc.field == "joint_positions" and f"(tolerance {GRIPPER_MEASURED_TOLERANCE:g})" in str(exc)
    joints[6] = 0.5
    msg.joint_positions = joints
    positions = np.asarray(msg.candidates[0].positions).reshape(HORIZON, config.dof)
    positions[2, 6] = -0.23  # a command below closed is still refused
    set_positions(msg.candidates[0], positions)
    exc = refused(msg, rules)
    assert exc.field == "candidates[0].positions" and f"(tolerance {LIMIT_TOLERANCE:g})" in str(exc)


def test_joint_positions_of_the_wrong_length_are_refused(config, rules):
    msg = make_request(config)
    msg.joint_positions = np.zeros(config.dof - 1)
    exc = refused(msg, rules)
    assert exc.field == "joint_positions" and "13 entries, expected 14" in str(exc)


def test_a_candidate_with_nan_positions_is_refused(config, rules):
    msg = make_request(config)
    set_positions(msg.candidates[1], np.full((HORIZON, config.dof), np.nan))
    exc = refused(msg, rules)
    assert exc.field == "candidates[1].positions"
    assert "step 0: left_waist = nan is not finite" in str(exc)
    assert f"({HORIZON * config.dof} bad entries in 1 candidates)" in str(exc)


def test_a_candidate_far_outside_the_limits_is_refused(config, rules):
    msg = make_request(config)
    positions = np.asarray(msg.candidates[2].positions).reshape(HORIZON, config.dof)
    positions[3, 0] = 1e9
    set_positions(msg.candidates[2], positions)
    exc = refused(msg, rules)
    assert exc.field == "candidates[2].positions"
    assert "step 3: left_waist = 1e+09 outside limits [-3.14, 3.14] (tolerance 0.1)" in str(exc)


def test_more_candidates_than_max_candidates_are_refused(config, rules):
    validate_request(make_request(config, n=rules.max_candidates), rules)  # exactly the maximum: fine
    exc = refused(make_request(config, n=rules.max_candidates + 1), rules)
    assert exc.field == "candidates"
    assert "5 sent, more than planning.max_candidates = 4" in str(exc)


def test_no_candidates_are_refused(config, rules):
    msg = make_request(config)
    msg.candidates = []
    assert refused(msg, rules).field == "candidates"


@pytest.mark.parametrize("change, field, text", [
    (lambda m: setattr(m.images[0], "encoding", "yuv422"), "images[0] (cam_left_wrist)",
     "unsupported encoding 'yuv422'"),
    (lambda m: setattr(m.images[2], "data", bytes(m.images[2].data)[:-5]), "images[2] (cam_high)",
     "data has 2299 bytes, expected step*height = 96*24 = 2304"),
    (lambda m: setattr(m.images[1], "height", 0), "images[1] (cam_right_wrist)", "empty image 0x32"),
    (lambda m: (setattr(m, "camera_names", ["cam_left_wrist", "cam_right_wrist", "cam_low"])),
     "camera_names", "lack ['cam_high']"),
    (lambda m: (setattr(m, "camera_names", ["cam_left_wrist", "cam_high", "cam_high"])),
     "camera_names", "name a camera twice"),
    (lambda m: setattr(m, "images", list(m.images)[:2]), "camera_names", "3 names for 2 images"),
])
def test_bad_cameras_and_images_are_refused(config, rules, change, field, text):
    msg = make_request(config)
    change(msg)
    exc = refused(msg, rules)
    assert exc.field == field and text in str(exc), str(exc)


def test_wrong_joints_horizon_and_chunk_fields_are_refused(config, rules):
    msg = make_request(config)
    for chunk in msg.candidates:
        chunk.joint_names = list(config.joint_names[:-1]) + ["right_finger"]
    exc = refused(msg, rules)
    assert exc.field == "candidates[0].joint_names" and "right_finger" in str(exc)

    msg = make_request(config)
    msg.candidates[1].joint_names = list(reversed(msg.candidates[1].joint_names))
    assert refused(msg, rules).field == "candidates[1].joint_names"

    msg = make_request(config)
    msg.candidates[2].horizon = HORIZON - 1
    exc = refused(msg, rules)  # positions no longer match horizon * dof
    assert exc.field == "candidates[2]" and "positions != horizon*dof" in str(exc)

    short = make_request(config)
    for chunk in short.candidates:
        chunk.horizon = HORIZON - 1
        chunk.positions = np.asarray(chunk.positions)[: (HORIZON - 1) * config.dof]
    exc = refused(short, rules)
    assert exc.field == "candidates[0].horizon"
    assert f"{HORIZON - 1}, the planning model predicts after {HORIZON}" in str(exc)


def test_unknown_task_and_non_positive_deadline_are_refused(config, rules):
    exc = refused(make_request(config, task="make coffee"), rules)
    assert exc.field == "task" and "'make coffee'" in str(exc)
    msg = make_request(config)
    msg.deadline = seconds_to_duration(0.0)
    exc = refused(msg, rules)
    assert exc.field == "deadline" and "0 s, must be > 0" in str(exc)


def test_refusals_are_counted_per_field_not_per_index(config, rules):
    stats = PlannerStats()
    for field in ("candidates[1].positions", "candidates[3].positions", "images[0] (cam_high)", "joint_positions"):
        stats.refused(RequestRefused(field, "x"))
    stats.planned(0.5)
    assert dict(stats.counts) == {"refused candidates.positions": 2, "refused images": 1,
                                  "refused joint_positions": 1, "planned": 1}
    assert "max backlog 1" in stats.summary(1) and "compute time mean 0.50 s" in stats.summary(1)


def test_rules_from_config_follow_the_model_joint_order(config):
    names = tuple(reversed(config.joint_names))
    rules = RequestRules.from_config(config, 8, names, CAMERAS, HORIZON)
    lower = np.asarray(config.limits.lower)
    np.testing.assert_array_equal(rules.lower, lower[::-1])
    with pytest.raises(ValueError, match="no limits"):
        RequestRules.from_config(config, 8, names + ("extra_joint",), CAMERAS, HORIZON)


# ---------------------------------------------------------------------------- never fall behind
def test_a_burst_from_one_client_leaves_one_waiting_and_supersedes_the_rest():
    queue = NewestPerClient()
    superseded = [queue.put(Waiting("a", i, None, float(i))) for i in range(20)]
    assert superseded[0] is None
    assert [w.request for w in superseded[1:]] == list(range(19))  # each older one answered at once
    assert len(queue) == 1 and queue.max_backlog == 1
    assert queue.take(timeout_s=0).request == 19  # the newest is served
    assert queue.take(timeout_s=0) is None


def test_clients_are_served_in_the_order_they_started_waiting():
    queue = NewestPerClient()
    queue.put(Waiting("a", "a1", None, 0.0))
    queue.put(Waiting("b", "b1", None, 0.1))
    assert queue.put(Waiting("a", "a2", None, 0.2)).request == "a1"
    assert queue.max_backlog == 2
    assert [queue.take(0).request, queue.take(0).request] == ["b1", "a2"]


def test_take_blocks_until_a_request_arrives_and_close_releases_it():
    queue = NewestPerClient()
    got = []
    worker = threading.Thread(target=lambda: got.append(queue.take()))
    worker.start()
    queue.put(Waiting("a", "r1", None, 0.0))
    worker.join(2.0)
    assert got and got[0].request == "r1"
    worker = threading.Thread(target=lambda: got.append(queue.take()))
    worker.start()
    worker.join(0.2)
    assert worker.is_alive()  # nothing waits: take blocks
    assert queue.close() == []
    worker.join(2.0)
    assert not worker.is_alive() and got[-1] is None


def test_deadline_is_counted_from_reception():
    assert not deadline_passed(received_s=10.0, deadline_s=2.0, now_s=11.9)
    assert deadline_passed(received_s=10.0, deadline_s=2.0, now_s=12.1)


def test_clients_are_told_apart_by_frame_id_then_publisher():
    gid = {"implementation_identifier": "rmw_fastrtps_cpp", "data": [1, 2, 255]}
    assert client_key("policy_a", gid) == "policy_a"
    assert client_key("", gid) == "gid:0102ff"
    assert client_key("", None) == ""


# ---------------------------------------------------------------------------- setting
def test_max_candidates_setting(config, tmp_path):
    assert PlanningSettings.from_config(config).max_candidates == 16

    def settings_with(**planning):
        raw = yaml.safe_load(config.path.read_text())
        raw["planning"].update(planning)
        path = tmp_path / "robot.yaml"
        path.write_text(yaml.safe_dump(raw))
        return PlanningSettings.from_config(load_config(path))

    assert settings_with(max_candidates=32, num_candidates=32).max_candidates == 32
    with pytest.raises(ConfigError, match=r"planning\.max_candidates: expected an integer >= 1, got 0"):
        settings_with(max_candidates=0)
    with pytest.raises(ConfigError, match=r"planning\.num_candidates: 20 is more than planning\.max_candidates = 16"):
        settings_with(num_candidates=20)


def test_action_latents_pass_through_or_are_refused_by_shape_and_value(config, rules):
    """The policy's raw action latent frames travel with the request ([N, C, h, w]); the
    planner conditions its world model on them. Absent: None (the chunks are tiled)."""
    msg = make_request(config, n=3)
    assert validate_request(msg, rules).action_latents is None
    latents = np.random.default_rng(2).normal(size=(3, 16, 2, 2)).astype(np.float32)
    msg.action_latents = latents.ravel()
    msg.action_latents_shape = list(latents.shape)
    np.testing.assert_array_equal(validate_request(msg, rules).action_latents, latents)
    msg.action_latents_shape = [2, 16, 2, 2]
    assert refused(msg, rules).field == "action_latents_shape"
    msg.action_latents_shape = list(latents.shape)
    bad = latents.copy()
    bad[1, 0, 0, 0] = np.nan
    msg.action_latents = bad.ravel()
    exc = refused(msg, rules)
    assert exc.field == "action_latents" and "1 non-finite" in str(exc)
