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


# -- Trossen's ROS 2 ALOHA (github.com/Interbotix/aloha, branch main) and the gripper presets --

def test_real_config_has_trossen_ros2_aloha_topics_and_adapter():
    """config/aloha_real.yaml: realsense2_camera >= 4.55 nodes `camera` in namespace <cam>
    publish <cam>/camera/color/image_rect_raw (aloha/constants.py COLOR_IMAGE_TOPIC_NAME); the
    Interbotix driver's follower_<side>/joint_states; its command topics (interbotix adapter)."""
    from cosmos_policy_ros.control.output_adapters import adapter_settings

    cfg = load_config("aloha_real")
    assert {c.name: c.topic for c in cfg.cameras} == {
        cam: f"{cam}/camera/color/image_rect_raw" for cam in ("cam_high", "cam_left_wrist", "cam_right_wrist", "cam_low")}
    assert [c.name for c in cfg.cameras if c.required] == ["cam_high", "cam_left_wrist", "cam_right_wrist"]
    assert cfg.camera_transport == "raw"
    assert [a.joint_state_topic for a in cfg.arms] == ["follower_left/joint_states", "follower_right/joint_states"]
    assert [a.command_namespace for a in cfg.arms] == ["follower_left", "follower_right"]
    assert cfg.control_rate_hz == 50.0  # aloha DT = 0.02
    assert adapter_settings(cfg) == ("interbotix", "motor_rad")
    assert cfg.output.interbotix_gripper_mode == "set"
    assert "sim" not in cfg.raw
    # Everything else the robot shares with the sim config.
    sim = load_config("aloha")
    assert cfg.joint_names == sim.joint_names and cfg.raw["limits"] == sim.raw["limits"]


def test_realsense_rgb8_640x480_frame_decodes_without_conversion():
    """RealSense colour frames as aloha's rs_cam.yaml configures them: rgb8, 640x480."""
    from cosmos_policy_ros.control.images import image_to_rgb

    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    rgb = image_to_rgb("rgb8", 480, 640, 640 * 3, frame.tobytes())
    assert rgb.shape == (480, 640, 3)
    np.testing.assert_array_equal(rgb, frame)


@pytest.mark.parametrize("config, finger_m, motor_rad", [
    # Trossen ROS 2 aloha: FOLLOWER_GRIPPER_POSITION_CLOSE/OPEN, FOLLOWER_GRIPPER_JOINT_CLOSE/OPEN
    ("aloha_real", (0.0440, 0.0579), (0.6197, 1.6214)),
    # original ROS 1 ALOHA and gym-aloha: PUPPET_GRIPPER_POSITION_*, PUPPET_GRIPPER_JOINT_*
    ("aloha", (0.01844, 0.05800), (-0.6213, 1.4910)),
])
def test_follower_gripper_constants(config, finger_m, motor_rad):
    for arm in load_config(config).arms:
        g = arm.gripper
        assert (g.finger_closed_m, g.finger_open_m) == finger_m
        assert (g.motor_closed_rad, g.motor_open_rad) == motor_rad


def test_gripper_presets_and_overrides():
    from cosmos_policy_ros.config import GRIPPER_PRESETS

    assert GRIPPER_PRESETS["aloha_ros2"] == {"finger_closed_m": 0.0440, "finger_open_m": 0.0579,
                                             "motor_closed_rad": 0.6197, "motor_open_rad": 1.6214}
    assert GRIPPER_PRESETS["aloha_ros1"] == {"finger_closed_m": 0.01844, "finger_open_m": 0.05800,
                                             "motor_closed_rad": -0.6213, "motor_open_rad": 1.4910}
    raw = copy.deepcopy(_raw())
    raw["arms"]["left"]["gripper"].update(preset="aloha_ros2", finger_closed_m=0.045)
    left = parse_config(raw, "aloha.yaml").arms[0].gripper
    assert (left.finger_closed_m, left.finger_open_m, left.motor_open_rad) == (0.045, 0.0579, 1.6214)


@pytest.mark.parametrize("gripper, message", [
    ({"preset": "aloha_ros3"}, r"arms.left.gripper.preset: expected one of \['aloha_ros1', 'aloha_ros2'\], got 'aloha_ros3'"),
    ({"preset": "aloha_ros2", "motor_open_ra": 1.7}, "unknown key 'motor_open_ra'; did you mean 'motor_open_rad'\\?"),
    ({"finger_closed_m": 0.01, "finger_open_m": 0.05}, None),  # no preset, no motor range: allowed
    ({"finger_closed_m": 0.01}, "missing field 'finger_open_m'"),
    ({"finger_closed_m": 0.01, "finger_open_m": 0.05, "motor_open_rad": 1.0}, "both motor_closed_rad and motor_open_rad"),
    ({"preset": "aloha_ros2", "motor_closed_rad": 1.6214}, "motor_open_rad must differ"),
])
def test_bad_gripper_section_names_the_field(gripper, message):
    raw = copy.deepcopy(_raw())
    raw["arms"]["left"]["gripper"] = {"joint": "left_gripper", "state_name": "left_finger", **gripper}
    if message is None:
        assert not parse_config(raw, "aloha.yaml").arms[0].gripper.has_motor_range
        return
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, "aloha.yaml")


def test_gripper_conversion_is_one_affine_map_per_unit():
    """GripperConfig is the package's only gripper conversion (executor output, sim input,
    JointState and dataset normalization): Trossen's FOLLOWER_POS2JOINT maps an open finger
    (0.0579 m) to the open motor position (1.6214 rad), and each unit round-trips."""
    g = load_config("aloha_real").arms[0].gripper
    assert g.motor_from_normalized(g.normalize_finger(0.0579)) == pytest.approx(1.6214)
    assert g.motor_from_normalized(g.normalize_finger(0.0440)) == pytest.approx(0.6197)
    opening = np.linspace(-0.1, 1.1, 13)
    for unit in ("normalized", "finger_m", "motor_rad"):
        np.testing.assert_allclose(g.to_normalized(g.from_normalized(opening, unit), unit), opening, atol=1e-12)
    np.testing.assert_allclose(g.normalize_finger_velocity(np.array([0.0139])), [1.0])
    with pytest.raises(ValueError, match="gripper unit"):
        g.from_normalized(0.5, "degrees")


def test_motor_unit_without_motor_range_is_refused(single_arm_config):
    """A gripper without a motor range cannot be driven in motor radians (no guessed range)."""
    from cosmos_policy_ros.control.output_adapters import adapter_settings

    raw = copy.deepcopy(single_arm_config.raw)
    raw["output"] = {"adapter": "interbotix"}
    with pytest.raises(ConfigError, match="arms.arm.gripper: the 'interbotix' adapter commands the gripper in motor radians"):
        adapter_settings(parse_config(raw, "single_arm.yaml"))


def test_interbotix_gripper_plan_matches_trossen_follower_setup():
    """One OperatingModes call per follower gripper, as aloha's setup_follower_bot makes it
    (single, gripper, current_based_position, velocity profile 0/0), on the arm's namespace."""
    from cosmos_policy_ros.control.output_adapters import OperatingModeRequest, interbotix_gripper_plan

    plan = interbotix_gripper_plan(load_config("aloha_real"))
    assert plan.action == "set" and plan.timeout_s == 10.0
    assert plan.requests == (
        OperatingModeRequest("follower_left/set_operating_modes", "single", "gripper", "current_based_position", "velocity", 0, 0),
        OperatingModeRequest("follower_right/set_operating_modes", "single", "gripper", "current_based_position", "velocity", 0, 0))
    for key, value, message in (("interbotix_gripper_mode", "maybe", "output.interbotix_gripper_mode: expected one of"),
                                ("interbotix_service_timeout_s", 0, "output.interbotix_service_timeout_s: expected seconds > 0")):
        with pytest.raises(ConfigError, match=message):
            interbotix_gripper_plan(load_config("aloha_real", {f"output.{key}": value}))
