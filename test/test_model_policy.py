"""CosmosPolicy on the tiny checkpoint: full pipeline, determinism, batched planner APIs."""
import json

import numpy as np
import pytest
import torch

from cosmos_policy_ros.model.checkpoint import CheckpointError, CosmosCheckpoint, predict2_2b_transformer
from cosmos_policy_ros.model.cosmos_policy import CosmosPolicy, EncodedObservation
from cosmos_policy_ros.model.tiny import TINY_TASKS, build_tiny_checkpoint
from cosmos_policy_ros.types import Observation, Policy

CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def policy(tiny_dir):
    torch.set_num_threads(2)
    return CosmosPolicy.from_pretrained(tiny_dir, device="cpu")


def make_obs(seed=0, task=TINY_TASKS[0]):
    rng = np.random.default_rng(seed)
    images = {cam: rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for cam in CAMERAS}
    return Observation(stamp_ns=5, images=images, joint_positions=rng.uniform(-0.3, 0.3, 14), task=task)


def test_infer_returns_full_policy_output(policy):
    assert isinstance(policy, Policy)
    out = policy.infer(make_obs())
    assert out.actions.shape == (50, 14) and np.all(np.isfinite(out.actions))
    assert 0.0 <= out.predicted_value <= 1.0
    assert out.future_joint_positions.shape == (14,)
    assert set(out.future_images) == set(CAMERAS)
    assert all(img.shape == (64, 64, 3) and img.dtype == np.uint8 for img in out.future_images.values())
    assert set(policy.last_timings) >= {"preprocess", "vae_encode", "denoise", "decode"}


def test_same_seed_same_chunk_and_candidates_match_infer(policy):
    obs = make_obs(1)
    a = policy.infer(obs).actions
    b = policy.infer(obs).actions
    np.testing.assert_array_equal(a, b)
    encoded = policy.encode_observation(obs)
    cands = policy.sample_candidates(encoded, num_candidates=3, seed=policy.seed)
    assert len(cands) == 3
    np.testing.assert_allclose(cands[0].actions, a, atol=1e-4)  # batch of 3, same first noise draw
    assert not np.allclose(cands[1].actions, cands[0].actions)
    other = policy.sample_candidates(encoded, num_candidates=1, seed=policy.seed + 1)[0]
    assert not np.allclose(other.actions, a)


def test_conditioning_latents_survive_sampling(policy):
    encoded = policy.encode_observation(make_obs(2))
    layout = policy.config.layout
    clean = encoded.latents.expand(2, -1, -1, -1, -1)
    for mode in ("policy", "world_model", "value"):
        samples = policy._sample(clean, encoded.text_embedding, mode, seeds=[3, 4])
        cond = layout.condition_frames(mode)
        assert torch.equal(samples[:, :, cond], clean[:, :, cond])


def test_predict_outcomes_batched_shapes(policy):
    encoded = policy.encode_observation(make_obs(3))
    assert isinstance(encoded, EncodedObservation)
    chunks = np.stack([policy.infer(make_obs(3)).actions] * 2)
    out = policy.predict_outcomes(encoded, chunks, num_future_samples=2, num_value_samples=3, seed=4)
    assert out.future_joint_positions.shape == (2, 2, 14)
    assert out.values.shape == (2, 2, 3)
    assert np.all((out.values >= 0) & (out.values <= 1))
    again = policy.predict_outcomes(encoded, chunks, num_future_samples=2, num_value_samples=3, seed=4)
    np.testing.assert_array_equal(out.values, again.values)
    with pytest.raises(ValueError, match="action_chunks"):
        policy.predict_outcomes(encoded, chunks[:, :10])


def test_unknown_task_and_missing_camera_are_refused(policy):
    with pytest.raises(KeyError, match="T5"):
        policy.infer(make_obs(task="make coffee"))
    obs = make_obs()
    del obs.images["cam_high"]
    with pytest.raises(KeyError, match="cam_high"):
        policy.infer(obs)


def test_checkpoint_round_trip_is_identical(tiny_dir, tmp_path, policy):
    ckpt = CosmosCheckpoint.from_pretrained(tiny_dir)
    ckpt.save_pretrained(tmp_path / "copy")
    again = CosmosPolicy.from_pretrained(tmp_path / "copy", device="cpu")
    obs = make_obs(5)
    np.testing.assert_array_equal(again.infer(obs).actions, policy.infer(obs).actions)
    assert again.config == policy.config


def test_malformed_checkpoint_gives_clear_errors(tiny_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_dir, bad)
    cfg = json.loads((bad / "cosmos_policy.json").read_text())
    cfg["chunk_size"] = "fifty"
    (bad / "cosmos_policy.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"cosmos_policy.json: field 'chunk_size'"):
        CosmosCheckpoint.from_pretrained(bad)
    cfg["chunk_size"] = 50
    cfg["num_steps"]["value"] = 0
    (bad / "cosmos_policy.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"num_steps.value"):
        CosmosCheckpoint.from_pretrained(bad)
    cfg["num_steps"]["value"] = 5
    (bad / "cosmos_policy.json").write_text(json.dumps(cfg))
    stats = json.loads((bad / "dataset_statistics.json").read_text())
    stats["actions_min"] = stats["actions_min"][:7]
    stats["actions_max"] = stats["actions_max"][:7]
    (bad / "dataset_statistics.json").write_text(json.dumps(stats))
    with pytest.raises(CheckpointError, match="dataset_statistics.json"):
        CosmosCheckpoint.from_pretrained(bad)
    (bad / "dataset_statistics.json").write_text(json.dumps({"actions_min": [0]}))
    with pytest.raises(ValueError, match="actions_max"):
        CosmosCheckpoint.from_pretrained(bad)
    shutil.copy(tiny_dir / "dataset_statistics.json", bad / "dataset_statistics.json")
    (bad / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="diffusion_pytorch_model.safetensors"):
        CosmosCheckpoint.from_pretrained(bad)


def test_full_size_2b_config_parameter_count():
    model = predict2_2b_transformer("meta")
    count = sum(p.numel() for p in model.parameters())
    assert count == 1_956_413_440
    assert next(model.parameters()).is_meta
