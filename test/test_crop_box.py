"""The camera crop box: the region of the frame a checkpoint's model sees.

At 64 px the whole sim frame leaves the cube ~2 px wide; cutting the workspace first makes it
several times larger. The box is a checkpoint setting, so training (VAE frames, policy
samples) and inference (policy node) must cut the same region.
"""
from dataclasses import replace

import h5py
import numpy as np
import pytest

from cosmos_policy_ros.learning.training import EpisodeDataset
from cosmos_policy_ros.learning.vae import VaeSettings, held_out_starts, load_frames
from cosmos_policy_ros.model.checkpoint import CheckpointError, PolicyConfig
from cosmos_policy_ros.model.cosmos_policy import CosmosPolicy
from cosmos_policy_ros.model.preprocessing import crop_region, preprocess_image, validate_crop_box
from cosmos_policy_ros.model.tiny import make_tiny_checkpoint
from cosmos_policy_ros.types import Observation

BOX = (0.3, 0.35, 0.5, 0.4)


def frame_with_cube(height=240, width=320, cube=9, at=(130, 180)):
    """Grey table, one red square of ``cube`` px (scaled with the frame)."""
    frame = np.full((height, width, 3), 100, np.uint8)
    scale = height / 240
    y, x, c = int(at[0] * scale), int(at[1] * scale), int(cube * scale)
    frame[y:y + c, x:x + c] = (220, 20, 20)
    return frame


def red_pixels(image):
    image = image.astype(int)
    return int(((image[..., 0] - image[..., 1]) > 60).sum())


def test_box_is_fractions_of_the_frame_so_sim_and_camera_frames_give_the_same_region():
    small = frame_with_cube()
    large = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)  # a 480x640 camera
    cut_small, cut_large = crop_region(small, BOX), crop_region(large, BOX)
    assert cut_small.shape == (120, 128, 3) and cut_large.shape == (240, 256, 3)
    np.testing.assert_array_equal(cut_large[::2, ::2], cut_small)
    np.testing.assert_array_equal(cut_small, small[72:192, 112:240])


def test_cropped_cube_covers_several_times_the_pixels():
    frame = frame_with_cube()
    whole = preprocess_image(frame, 64, 0.9)
    cropped = preprocess_image(frame, 64, 0.9, crop_box=BOX)
    assert cropped.shape == whole.shape == (64, 64, 3)
    assert red_pixels(cropped) >= 4 * max(1, red_pixels(whole))
    assert red_pixels(whole) > 0  # the cube is in view either way


@pytest.mark.parametrize("bad", [(0.5, 0.5, 0.6, 0.1), (0, 0, 0, 0.5), (-0.1, 0, 0.5, 0.5), (0, 0, 1),
                                 ("a", 0, 1, 1), (0, 0, float("nan"), 1), None])
def test_bad_boxes_are_refused_with_the_expected_form(bad):
    with pytest.raises(ValueError, match="crop box"):
        validate_crop_box(bad)


def test_checkpoint_field_round_trips_defaults_to_the_whole_frame_and_is_validated():
    data = make_tiny_checkpoint(0).config.to_dict()
    assert data["crop_box"] is None
    del data["crop_box"]
    assert PolicyConfig.from_dict(data).crop_box is None  # checkpoints written before the field
    config = PolicyConfig.from_dict({**data, "crop_box": list(BOX)})
    assert config.crop_box == BOX
    assert PolicyConfig.from_dict(config.to_dict()).crop_box == BOX
    with pytest.raises(CheckpointError, match="'crop_box'"):
        PolicyConfig.from_dict({**data, "crop_box": [0.5, 0.5, 0.9, 0.9]})


def test_training_and_inference_cut_the_same_region(tmp_path):
    """The VAE's frames, the policy's training samples and the deployed policy's input agree."""
    frames = np.stack([frame_with_cube(at=(120 + 5 * t, 170 + 3 * t)) for t in range(6)])
    for k in range(2):
        with h5py.File(tmp_path / f"episode_{k}.hdf5", "w") as f:
            f.attrs["success"] = True
            f.attrs["control_rate_hz"] = 25.0
            f.attrs["task_description"] = "transfer the cube"
            obs = f.create_group("observations")
            obs.create_dataset("qpos", data=np.zeros((6, 14)))
            f.create_dataset("action", data=np.zeros((6, 14)))
            images = obs.create_group("images")
            for cam in ("cam_high", "cam_left_wrist", "cam_right_wrist"):
                images.create_dataset(cam, data=frames)
    expected = preprocess_image(frames[2], 64, 0.9, crop_box=BOX)

    train, _ = load_frames(tmp_path, "cam_high", VaeSettings(crop_box=BOX, held_out_episodes=1))
    assert any(np.array_equal(f, expected) for f in train)
    starts = held_out_starts(tmp_path, "cam_high", VaeSettings(crop_box=BOX, held_out_episodes=1))
    np.testing.assert_array_equal(starts, preprocess_image(frames[0], 64, 0.9, crop_box=BOX)[None])

    checkpoint = make_tiny_checkpoint(0)
    config = replace(checkpoint.config, crop_box=BOX)
    assert config.image_size == 64 and config.center_crop_area == 0.9
    dataset = EpisodeDataset(config, [tmp_path])
    try:
        np.testing.assert_array_equal(dataset.sample(2).images["cam_high"], expected)
    finally:
        dataset.close()

    policy = CosmosPolicy(replace(checkpoint, config=config), decode_future_images=False)
    obs = Observation(stamp_ns=1, images={cam: frames[2] for cam in config.camera_names},
                      joint_positions=np.zeros(14), task="transfer the cube")
    np.testing.assert_array_equal(policy.preprocess(obs)["cam_high"], expected)
    without = preprocess_image(frames[2], 64, 0.9)
    assert not np.array_equal(without, expected)
