"""Latent layout and the exact inject -> extract round trip."""
import numpy as np
import pytest
import torch

from cosmos_policy_ros.model.layout import (
    LatentLayout,
    aloha_layout,
    extract,
    inject,
    libero_layout,
    mean_over_copies,
    robocasa_layout,
    tile_vector,
)
from cosmos_policy_ros.model.normalization import NormalizationStats


def test_aloha_layout_matches_official_order():
    layout = aloha_layout()
    assert layout.slot_names == (
        "blank", "proprio", "left_wrist", "right_wrist", "cam_high", "action",
        "future_proprio", "future_left_wrist", "future_right_wrist", "future_cam_high", "value",
    )
    assert layout.cameras == ("cam_left_wrist", "cam_right_wrist", "cam_high")
    assert layout.condition_frames("policy").nonzero().flatten().tolist() == [0, 1, 2, 3, 4]
    assert layout.condition_frames("world_model").nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 5]
    assert layout.condition_frames("value").nonzero().flatten().tolist() == list(range(10))
    planning = aloha_layout(value_from_future_state_only=True)
    assert planning.condition_frames("value").nonzero().flatten().tolist() == [0, 6, 7, 8, 9]


def test_other_suites_differ_only_in_slots():
    assert libero_layout().num_frames == 9
    assert robocasa_layout().num_frames == 11
    assert libero_layout().index("action") == 4


def test_layout_round_trips_through_dict():
    layout = aloha_layout(True)
    assert LatentLayout.from_dict(layout.to_dict()) == layout


def test_malformed_layout_is_refused():
    data = aloha_layout().to_dict()
    data["conditions"]["policy"] = ["blank", "nonexistent"]
    with pytest.raises(ValueError, match="nonexistent"):
        LatentLayout.from_dict(data, source="x.json")
    data = aloha_layout().to_dict()
    del data["conditions"]["value"]
    with pytest.raises(ValueError, match="value"):
        LatentLayout.from_dict(data)


@pytest.mark.parametrize("n", [1, 14, 700, 1024])
def test_inject_then_extract_is_exact(n):
    gen = torch.Generator().manual_seed(n)
    latents = torch.randn(3, 16, 11, 8, 8, generator=gen)
    vector = torch.rand(3, n, generator=gen) * 2 - 1
    out = inject(latents, 5, vector)
    torch.testing.assert_close(extract(out, 5, n), vector, rtol=0, atol=1e-6)
    # only the target frame changed
    keep = [i for i in range(11) if i != 5]
    assert torch.equal(out[:, :, keep], latents[:, :, keep])
    # tiling order: flat C-major, repeated, truncated
    flat = out[:, :, 5].reshape(3, -1)
    assert torch.equal(flat[:, :n], vector)


def test_tile_rejects_too_long_vector():
    with pytest.raises(ValueError):
        tile_vector(torch.zeros(1, 2000), (16, 8, 8))
    with pytest.raises(ValueError):
        mean_over_copies(torch.zeros(1, 16, 2, 2), 100)


def test_normalization_round_trip_and_errors(tmp_path):
    stats = NormalizationStats.from_dict(
        {"actions_min": [-1.0, 0.0], "actions_max": [1.0, 1.0], "proprio_min": [-2.0, 0.0],
         "proprio_max": [2.0, 0.0], "num_transitions": 5}
    )
    q = np.array([[0.5, 0.7]])
    np.testing.assert_allclose(stats.unnormalize_actions(stats.normalize_actions(q)), q)
    assert stats.normalize_proprio(np.array([2.0, 0.0])).tolist() == [1.0, 0.0]  # constant dim -> 0
    path = tmp_path / "stats.json"
    stats.save(path)
    assert NormalizationStats.load(path).extra == {"num_transitions": 5}
    with pytest.raises(ValueError, match="actions_max"):
        NormalizationStats.from_dict({"actions_min": [0.0], "proprio_min": [0.0], "proprio_max": [1.0]}, "s.json")
    with pytest.raises(ValueError, match="proprio_min' > 'proprio_max"):
        NormalizationStats.from_dict(
            {"actions_min": [0.0], "actions_max": [1.0], "proprio_min": [2.0], "proprio_max": [1.0]}
        )
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        NormalizationStats.load(bad)
