import numpy as np
import pytest

from cosmos_policy_ros.control.observation import ObservationAssembler

MS = 1_000_000
ARM_NAMES = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "left_finger"]


def feed(asm, stamp_ms, cams=("cam_high", "cam_left_wrist", "cam_right_wrist"), joints_ms=None, value=0.1):
    img = np.zeros((4, 4, 3), np.uint8)
    for cam in cams:
        asm.add_image(cam, stamp_ms * MS, img)
    for arm in ("left", "right"):
        asm.add_joint_state(arm, (joints_ms if joints_ms is not None else stamp_ms) * MS, ARM_NAMES,
                            [value] * 6 + [0.05800])


def test_complete_observation(aloha_config):
    asm = ObservationAssembler(aloha_config, task="t")
    feed(asm, 1000)
    obs = asm.assemble(1010 * MS)
    assert obs is not None and obs.task == "t" and set(obs.images) == {"cam_high", "cam_left_wrist", "cam_right_wrist"}
    np.testing.assert_allclose(obs.joint_positions, [0.1] * 6 + [1.0] + [0.1] * 6 + [1.0])
    assert obs.stamp_ns == 1000 * MS


def test_missing_camera_and_arm_are_counted(aloha_config):
    asm = ObservationAssembler(aloha_config)
    feed(asm, 1000, cams=("cam_high", "cam_left_wrist"))
    assert asm.assemble(1000 * MS) is None
    assert asm.refusals["missing_camera:cam_right_wrist"] == 1
    asm2 = ObservationAssembler(aloha_config)
    for cam in ("cam_high", "cam_left_wrist", "cam_right_wrist"):
        asm2.add_image(cam, 0, np.zeros((2, 2, 3), np.uint8))
    assert asm2.assemble(0) is None and asm2.refusals["missing_joint_state:left"] == 1


def test_skew_and_stale(aloha_config):
    asm = ObservationAssembler(aloha_config)
    feed(asm, 1000)
    asm.add_image("cam_high", 1300 * MS, np.zeros((4, 4, 3), np.uint8))  # one camera 300 ms newer
    assert asm.assemble(1300 * MS) is None and asm.refusals["skew"] == 1
    asm = ObservationAssembler(aloha_config)
    feed(asm, 1000)
    assert asm.assemble(1000 * MS + int(aloha_config.max_age_s * 1e9) + MS) is None
    assert asm.refusals["stale"] == 1


def test_latest_joint_sample_is_used_by_default(aloha_config):
    """The training data pairs each tick's joints with the last frame: so does the default."""
    assert aloha_config.joint_sample == "latest"
    asm = ObservationAssembler(aloha_config)
    feed(asm, 1000, value=0.1)
    for t, value in ((1100, 0.2), (1200, 0.3), (1300, 0.4)):  # 300 ms of joints after the frame
        for arm in ("left", "right"):
            asm.add_joint_state(arm, t * MS, ARM_NAMES, [value] * 6 + [0.05800])
    obs = asm.assemble(1300 * MS)
    assert obs.joint_positions[0] == pytest.approx(0.4) and obs.stamp_ns == 1300 * MS
    assert asm.assemble(1000 * MS + int(aloha_config.max_age_s * 1e9) + MS) is None  # the frames aged out
    assert asm.refusals["stale"] == 1
    # a joint stream that stalled behind the cameras is refused, not paired with new frames
    feed(asm, 1600, joints_ms=1300)
    for cam in ("cam_high", "cam_left_wrist", "cam_right_wrist"):
        asm.add_image(cam, 1500 * MS, np.zeros((4, 4, 3), np.uint8))
    assert asm.assemble(1600 * MS) is None and asm.refusals["skew"] == 1


def test_joint_sample_nearest_to_frames_is_used(aloha_config):
    from dataclasses import replace

    aloha_config = replace(aloha_config, observation=replace(aloha_config.observation, joint_sample="nearest_frame"))
    asm = ObservationAssembler(aloha_config)
    feed(asm, 1000, value=0.1)
    for t, value in ((1020, 0.2), (1040, 0.3), (1060, 0.4)):  # joints keep streaming after the frame
        for arm in ("left", "right"):
            asm.add_joint_state(arm, t * MS, ARM_NAMES, [value] * 6 + [0.05800])
    obs = asm.assemble(1060 * MS)
    assert obs.joint_positions[0] == pytest.approx(0.1) and obs.stamp_ns == 1000 * MS


def test_optional_camera_dropped_when_out_of_sync(aloha_config):
    asm = ObservationAssembler(aloha_config)
    feed(asm, 1000)
    asm.add_image("cam_low", 500 * MS, np.zeros((4, 4, 3), np.uint8))
    obs = asm.assemble(1000 * MS)
    assert obs is not None and "cam_low" not in obs.images
    asm.add_image("cam_low", 1000 * MS, np.zeros((4, 4, 3), np.uint8))
    assert "cam_low" in asm.assemble(1000 * MS).images


def test_bad_joint_state_raises_and_privileged_required(aloha_config):
    asm = ObservationAssembler(aloha_config, required_privileged=("object_pose",))
    with pytest.raises(ValueError, match="names but"):
        asm.add_joint_state("left", 0, ARM_NAMES, [0.0])
    feed(asm, 1000)
    assert asm.assemble(1000 * MS) is None and asm.refusals["missing_privileged:object_pose"] == 1
    asm.set_privileged("object_pose", np.arange(7.0))
    assert asm.assemble(1000 * MS).privileged["object_pose"][3] == 3.0


def test_frames_are_decoded_on_assembly_and_bad_ones_refused(aloha_config):
    asm = ObservationAssembler(aloha_config)
    feed(asm, 1000)
    decoded = []

    def decode(image):
        decoded.append(image.shape)
        return image + 1

    obs = asm.assemble(1000 * MS, decode=decode)
    assert len(decoded) == 3 and obs.images["cam_high"][0, 0, 0] == 1

    def reject(image):
        raise ValueError("corrupt jpeg")

    assert asm.assemble(1000 * MS, decode=reject) is None
    assert sum(v for k, v in asm.refusals.items() if k.startswith("bad_image:")) == 1
    assert "corrupt jpeg" in asm.last_refusal
    assert asm.assemble(1000 * MS) is None  # the bad frame is gone until a new one arrives


def test_an_episode_start_keeps_what_the_new_episode_already_sent(aloha_config):
    """Topics are not ordered against each other: the new episode's first frame and state
    can arrive before its START event. Clearing up to the start stamp keeps them (the eval-mode
    sim waits for the first chunk and sends nothing new); older data is forgotten."""
    asm = ObservationAssembler(aloha_config, required_privileged=("object_pose",))
    feed(asm, 1000, value=0.3)  # the previous episode
    asm.set_privileged("object_pose", np.zeros(7), 1000 * MS)
    feed(asm, 2000, value=0.1)  # the new episode's first state, before its START
    asm.set_privileged("object_pose", np.ones(7), 2000 * MS)
    asm.clear(before_ns=2000 * MS)
    obs = asm.assemble(2000 * MS)
    assert obs is not None and obs.joint_positions[0] == pytest.approx(0.1)
    assert obs.privileged["object_pose"][0] == 1.0
    asm.clear(before_ns=2001 * MS)  # everything is older now
    assert asm.assemble(2001 * MS) is None and asm.refusals["missing_camera:cam_high"] == 1
    feed(asm, 2100)
    asm.set_privileged("object_pose", np.ones(7))  # unstamped: dropped by any start
    asm.clear(before_ns=2050 * MS)
    assert asm.assemble(2100 * MS) is None and asm.refusals["missing_privileged:object_pose"] == 1
    asm.clear()
    assert asm.assemble(2100 * MS) is None and asm.refusals["missing_camera:cam_high"] == 2
