"""Training augmentation: the official ranges, one draw shared by all frames of a sample,
and each operation's arithmetic on uint8 images."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cosmos_policy_ros.learning.augmentation import AugmentationConfig, AugmentationParams, augment_frames

IDENTITY = dict(crop_top=0, crop_left=0, crop_size=16, angle_deg=0.0, brightness=1.0, contrast=1.0, saturation=1.0,
                hue=0.0)


def frames(count=2, size=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def test_draws_follow_the_official_stronger_augmentation_ranges():
    # apply_image_aug(stronger=True): RandomResizedCrop scale (0.9, 0.9) ratio 1, rotation U(-5, 5),
    # brightness U(0.7, 1.3), contrast U(0.6, 1.4), saturation U(0.5, 1.5), hue U(-0.05, 0.05).
    gen = torch.Generator().manual_seed(0)
    draws = [AugmentationConfig().draw(224, gen) for _ in range(2000)]
    assert {d.crop_size for d in draws} == {round(math.sqrt(0.9 * 224 * 224))}  # 213: 90 % of the area
    tops = np.array([d.crop_top for d in draws])
    assert tops.min() == 0 and tops.max() == 224 - 213
    for name, low, high in (("angle_deg", -5, 5), ("brightness", 0.7, 1.3), ("contrast", 0.6, 1.4),
                            ("saturation", 0.5, 1.5), ("hue", -0.05, 0.05)):
        values = np.array([getattr(d, name) for d in draws])
        assert low <= values.min() < low + 0.02 * (high - low) and high - 0.02 * (high - low) < values.max() <= high


def test_one_draw_is_shared_by_every_frame_of_a_sample():
    params = AugmentationConfig().draw(16, torch.Generator().manual_seed(3))
    image = frames(1)
    out = augment_frames(np.concatenate([image, image, frames(1, seed=1)]), params)
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[2], augment_frames(frames(1, seed=1), params)[0])


def test_identity_parameters_leave_images_unchanged_and_black_stays_black():
    image = frames()
    np.testing.assert_array_equal(augment_frames(image, AugmentationParams(**IDENTITY)), image)
    black = np.zeros((1, 16, 16, 3), np.uint8)
    for seed in range(5):
        params = AugmentationConfig().draw(16, torch.Generator().manual_seed(seed))
        assert augment_frames(black, params).max() == 0  # placeholder frames need no augmentation


def test_crop_rotation_and_colour_operations():
    image = frames(1)
    crop = augment_frames(image, AugmentationParams(**{**IDENTITY, "crop_top": 2, "crop_left": 1, "crop_size": 14}))
    patch = torch.from_numpy(image[:, 2:16, 1:15]).permute(0, 3, 1, 2).float()
    expected = torch.nn.functional.interpolate(patch, size=(16, 16), mode="bilinear", antialias=True).round()
    np.testing.assert_array_equal(crop, expected.permute(0, 2, 3, 1).numpy().astype(np.uint8))
    dot = np.zeros((1, 9, 9, 3), np.uint8)
    dot[0, 4, 8] = 255  # right of centre
    turned = augment_frames(dot, AugmentationParams(**{**IDENTITY, "crop_size": 9, "angle_deg": 90.0}))
    assert np.argwhere(turned[0, :, :, 0]).tolist() == [[0, 4]]  # counter-clockwise: now above centre
    bright = augment_frames(image, AugmentationParams(**{**IDENTITY, "brightness": 1.25}))
    np.testing.assert_array_equal(bright, np.floor(np.clip(image * 1.25, 0, 255)).astype(np.uint8))
    grey = augment_frames(image, AugmentationParams(**{**IDENTITY, "saturation": 0.0}))
    assert np.all(grey[..., 0] == grey[..., 1]) and np.all(grey[..., 1] == grey[..., 2])
    flat = augment_frames(image, AugmentationParams(**{**IDENTITY, "contrast": 0.0}))
    assert np.unique(flat).size == 1  # every pixel at the image's mean grey level
    red = np.zeros((1, 4, 4, 3), np.uint8)
    red[..., 0] = 200
    shifted = augment_frames(red, AugmentationParams(**{**IDENTITY, "crop_size": 4, "hue": 1 / 3}))
    assert shifted[0, 0, 0].tolist() == [0, 200, 0]  # a third of a turn: red -> green


def test_bad_frames_are_refused():
    with pytest.raises(ValueError, match="uint8"):
        augment_frames(np.zeros((1, 8, 6, 3), np.uint8), AugmentationParams(**IDENTITY))
