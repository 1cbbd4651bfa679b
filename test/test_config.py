import copy

import numpy as np
import pytest
import yaml

from cosmos_policy_ros.config import ConfigError, joint_state_to_positions, load_config, parse_config
from conftest import REPO


def test_aloha_config_maps_joint_states(aloha_config):
    cfg = aloha_config
    assert cfg.dof == 14 and cfg.control_rate_hz == 50.0
    assert [a.name for a in cfg.arms] == ["left", "right"]
    assert [c.name for c in cfg.cameras if c.required] == ["cam_high", "cam_left_wrist", "cam_right_wrist"]
    left = cfg.arms[0]
    names = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper", "left_finger", "right_finger"]
    positions = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0, 0.05800, -0.058])
    out = np.full(14, np.nan)
    joint_state_to_positions(left, names, positions, out)
    np.testing.assert_allclose(out[:6], positions[:6])
    assert out[6] == pytest.approx(1.0)  # finger fully open -> normalized 1
    assert np.all(np.isnan(out[7:]))


def test_joint_state_missing_joint_names_it(aloha_config):
    with pytest.raises(ValueError, match="elbow"):
        joint_state_to_positions(aloha_config.arms[0], ["waist", "shoulder"], np.zeros(2), np.zeros(14))


def test_single_arm_config_needs_no_code_change(single_arm_config):
    cfg = single_arm_config
    assert cfg.dof == 8 and cfg.arms[0].command_joint_names[-1] == "gripper"
    assert cfg.cameras[0].topic == "wrist_camera/color/image_raw"


def _raw():
    return yaml.safe_load((REPO / "config" / "aloha.yaml").read_text())


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.pop("joint_names"), "missing field 'joint_names'"),
    (lambda r: r.__setitem__("control_rate_hz", -5), "control_rate_hz: expected > 0"),
    (lambda r: r["arms"]["left"]["joints"].__setitem__("left_bogus", "x"), "not in joint_names"),
    (lambda r: r["arms"].pop("right"), "every joint_names entry must belong to exactly one arm"),
    (lambda r: r.__setitem__("camera_transport", "h264"), "camera_transport"),
    (lambda r: r.pop("limits"), "missing section 'limits'"),
    (lambda r: r["cameras"]["cam_high"].pop("topic"), "cameras.cam_high: missing field 'topic'"),
])
def test_bad_config_names_the_field(mutate, message):
    raw = copy.deepcopy(_raw())
    mutate(raw)
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, "aloha.yaml")


def test_overrides_and_missing_file(tmp_path):
    cfg = load_config("aloha", {"policy.type": "cosmos"})
    assert cfg.get("policy", "type") == "cosmos"
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_arm_command_order_follows_joint_names_not_yaml_order():
    raw = copy.deepcopy(_raw())
    raw["arms"]["left"]["joints"] = dict(reversed(list(raw["arms"]["left"]["joints"].items())))
    cfg = parse_config(raw, "reordered.yaml")
    assert cfg.arms[0].indices == tuple(range(7))
    assert cfg.arms[0].command_joint_names[:3] == ["waist", "shoulder", "elbow"]
