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
    assert cfg.policy.type == "cosmos"
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_arm_command_order_follows_joint_names_not_yaml_order():
    raw = copy.deepcopy(_raw())
    raw["arms"]["left"]["joints"] = dict(reversed(list(raw["arms"]["left"]["joints"].items())))
    cfg = parse_config(raw, "reordered.yaml")
    assert cfg.arms[0].indices == tuple(range(7))
    assert cfg.arms[0].command_joint_names[:3] == ["waist", "shoulder", "elbow"]


# One misspelled key per section: refused, naming the file, the key and the closest valid key.
@pytest.mark.parametrize("where, typo, suggestion", [
    ((), "control_rate", "control_rate_hz"),
    (("observation",), "max_skew", "max_skew_s"),
    (("limits",), "max_step", "max_step_per_tick"),
    (("execution",), "blend_tick", "blend_ticks"),
    (("output",), "adaptor", "adapter"),
    (("policy",), "trigger_margn_s", "trigger_margin_s"),
    (("planning",), "num_candidate", "num_candidates"),
    (("sim",), "episode_length", "episode_length_s"),
    (("recording",), "output_folder", "output_dir"),
    (("arms", "left"), "joint_state_topics", "joint_state_topic"),
    (("arms", "left", "gripper"), "finger_open", "finger_open_m"),
    (("cameras", "cam_high"), "requierd", "required"),
])
def test_misspelled_key_is_refused_with_the_closest_valid_key(where, typo, suggestion):
    raw = copy.deepcopy(_raw())
    section = raw
    for key in where:
        section = section.setdefault(key, {})
    section[typo] = section.get(suggestion, 1)
    with pytest.raises(ConfigError, match=f"aloha.yaml.*unknown key '{typo}'; did you mean '{suggestion}'"):
        parse_config(raw, "aloha.yaml")


@pytest.mark.parametrize("section, key, value, expected", [
    ("policy", "trigger", "sometimes", "one of 'overlapped', 'blocking', 'adaptive'"),
    ("policy", "seed", "zero", "an integer"),
    ("execution", "blend_ticks", -1, "an integer >= 0"),
    ("planning", "enabled", "yes", "true/false"),
    ("sim", "mujoco_cameras", ["top"], "a mapping"),
])
def test_wrongly_typed_value_names_field_and_expectation(section, key, value, expected):
    raw = copy.deepcopy(_raw())
    raw[section][key] = value
    with pytest.raises(ConfigError, match=f"aloha.yaml: {section}.{key}: expected {expected}"):
        parse_config(raw, "aloha.yaml")


def test_defaults_come_from_the_settings_and_every_shipped_yaml_parses():
    from cosmos_policy_ros.config import ExecutionSettings, PolicySettings

    raw = copy.deepcopy(_raw())
    raw.pop("execution")
    raw["policy"] = {}
    cfg = parse_config(raw, "aloha.yaml")
    assert cfg.execution == ExecutionSettings() and cfg.policy == PolicySettings()
    for path in sorted((REPO / "config").glob("*.yaml")):
        load_config(path)
