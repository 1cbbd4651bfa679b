"""Inference matches the official Cosmos Policy ALOHA deployment (NVlabs cosmos-policy).

Each test states the official fact it pins; the source is named in the test's docstring.
Tiny checkpoints on the CPU stand in for the 2B model (same code paths).
"""
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cosmos_policy_ros.config import ConfigError, load_config
from cosmos_policy_ros.control.planning import ModelPlanner, PlanningSettings, best_of_n, make_model_planner
from cosmos_policy_ros.model.checkpoint import CheckpointError, PolicyConfig, shipped_checkpoint
from cosmos_policy_ros.model.cosmos_policy import CosmosPolicy, CosmosPolicyOutput, ensemble_step_counts
from cosmos_policy_ros.model.layout import extract, inject
from cosmos_policy_ros.model.preprocessing import center_crop_resize, preprocess_image
from cosmos_policy_ros.model.sampler import num_evaluations
from cosmos_policy_ros.types import Observation

CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")


def make_obs(seed=0):
    rng = np.random.default_rng(seed)
    images = {cam: rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for cam in CAMERAS}
    return Observation(stamp_ns=1, images=images, joint_positions=rng.uniform(-0.3, 0.3, 14),
                       task="transfer the cube")


@pytest.fixture(scope="module")
def planning_model():
    torch.set_num_threads(1)  # shared machine
    return CosmosPolicy.from_pretrained(shipped_checkpoint("tiny_cosmos_planning"), device="cpu",
                                        decode_future_images=False)


@pytest.fixture(scope="module")
def policy_model():
    return CosmosPolicy.from_pretrained(shipped_checkpoint("tiny_cosmos"), device="cpu", decode_future_images=False)


class CountingDenoiser:
    """Wraps a denoiser; records (batch size, x_in) of every network call."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __call__(self, x, sigma, cond, text):
        self.calls.append((x.shape[0], x.clone(), sigma.clone()))
        return self.inner(x, sigma, cond, text)

    @property
    def sample_forwards(self):
        return sum(n for n, _, _ in self.calls)


@pytest.fixture
def counting(planning_model):
    original = planning_model.denoiser
    planning_model.denoiser = CountingDenoiser(original)
    yield planning_model.denoiser
    planning_model.denoiser = original


# ---------------------------------------------------------------------------- 1. image chain
def test_aloha_chain_is_256_bicubic_then_model_size_then_center_crop():
    """aloha_utils.resize_image_for_preprocessing: frames -> 256x256 bicubic (as the training
    data was stored); run_aloha_eval.resize_images: -> 224 (PIL default, bicubic);
    cosmos_utils.apply_image_transforms: 90%-area center crop resized back."""
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    stage1 = np.asarray(Image.fromarray(frame).resize((256, 256), resample=Image.BICUBIC))
    stage2 = np.asarray(Image.fromarray(stage1).resize((224, 224)))
    expected = center_crop_resize(stage2, 0.9)
    got = preprocess_image(frame, 224, 0.9, None, stored_image_size=256)
    np.testing.assert_array_equal(got, expected)
    direct = preprocess_image(frame, 224, 0.9, None)  # what checkpoints without the field get
    assert np.abs(got.astype(int) - direct.astype(int)).max() > 10


def test_chain_is_a_checkpoint_setting_old_checkpoints_keep_the_direct_resize(tmp_path, policy_model):
    cfg = policy_model.config
    assert cfg.stored_image_size is None  # shipped tiny checkpoint: no field -> today's chain
    data = cfg.to_dict()
    del data["stored_image_size"], data["seed"]
    old = PolicyConfig.from_dict(data)
    assert old.stored_image_size is None and old.seed == 0
    assert PolicyConfig.from_dict({**data, "stored_image_size": 256}).stored_image_size == 256
    for bad in (0, -1, "256", 1.5, True):
        with pytest.raises(CheckpointError, match="stored_image_size"):
            PolicyConfig.from_dict({**data, "stored_image_size": bad})
    with pytest.raises(CheckpointError, match="'seed'"):
        PolicyConfig.from_dict({**data, "seed": "195"})
    obs = make_obs(4)
    original = policy_model.config
    try:
        policy_model.config = replace(cfg, stored_image_size=256)
        images = policy_model.preprocess(obs)
    finally:
        policy_model.config = original
    for cam in CAMERAS:
        expected = preprocess_image(obs.images[cam], cfg.image_size, cfg.center_crop_area, stored_image_size=256)
        np.testing.assert_array_equal(images[cam], expected)
    assert any(not np.array_equal(images[c], policy_model.preprocess(obs)[c]) for c in CAMERAS)


# ---------------------------------------------------------------------------- 2. ensemble schedule
def test_official_member_step_counts():
    """cosmos_utils.get_future_state_prediction / get_value_prediction:
    np.linspace(1, num_steps, members).astype(int); one member: the plain step count."""
    assert ensemble_step_counts(5, 3) == [1, 3, 5]
    assert ensemble_step_counts(5, 5) == [1, 2, 3, 4, 5]
    assert ensemble_step_counts(5, 1) == [5]
    assert ensemble_step_counts(5, 3, "full") == [5, 5, 5]
    # the official sampler lowers 2 steps to 1 evaluation: 14 evaluations per future state
    assert sum(num_evaluations(n) for n in ensemble_step_counts(5, 5)) == 14


def test_network_evaluations_of_the_official_schedule(planning_model, counting):
    """N = 8 candidates, 3 world-model x 5 value members: world model 8 x (1 + 3 + 5) = 72
    sample-forwards, value 8 x 3 x (1 + 1 + 3 + 4 + 5) = 336; every member at 5 steps: 720."""
    encoded = planning_model.encode_observation(make_obs(1))
    chunks = np.random.default_rng(0).uniform(-0.3, 0.3, (8, 50, 14))
    planning_model.predict_outcomes(encoded, chunks, 3, 5, seed=195)
    assert counting.sample_forwards == 72 + 336
    # batched: one forward per evaluation index and mode (5 world + 5 value), not one per member
    assert len(counting.calls) == 10
    assert [n for n, _, _ in counting.calls[:5]] == [24, 16, 16, 8, 8]
    counting.calls.clear()
    planning_model.predict_outcomes(encoded, chunks, 3, 5, seed=195, ensemble_steps="full")
    assert counting.sample_forwards == 120 + 600


def test_each_member_is_the_official_one_at_a_time_sample(planning_model):
    """Candidate c's world-model member i takes linspace steps[i] from seed s + c + i; each of
    its value members j takes steps[j] from seed s + c + j (deploy.py passes seed + query_idx;
    the ensembles add the member index). Reference: the samples drawn one at a time, as the
    official loop does."""
    model, seed, n, s, v = planning_model, 195, 2, 3, 5
    encoded = model.encode_observation(make_obs(2))
    chunks = np.random.default_rng(5).uniform(-0.3, 0.3, (n, 50, 14))
    out = model.predict_outcomes(encoded, chunks, s, v, seed=seed)
    layout, cfg = model.config.layout, model.config
    normalized = torch.from_numpy(model.stats.normalize_actions(chunks).reshape(n, -1)).float()
    text = encoded.text_embedding
    for c in range(n):
        clean = inject(encoded.latents, layout.index_of_kind("action"), normalized[c : c + 1])
        for i, world_steps in enumerate([1, 3, 5]):
            world = model._sample(clean, text, "world_model", [seed + c + i], world_steps)
            future = extract(world, layout.index_of_kind("proprio", future=True), cfg.dof).double().numpy()
            np.testing.assert_allclose(out.future_joint_positions[c, i],
                                       model.stats.unnormalize_proprio(future)[0], atol=1e-5)
            for j, value_steps in enumerate([1, 2, 3, 4, 5]):
                sample = model._sample(world, text, "value", [seed + c + j], value_steps)
                value = model.stats.unnormalize_value(extract(sample, layout.index_of_kind("value"), 1)[:, 0].double().numpy())
                assert out.values[c, i, j] == pytest.approx(float(value[0]), abs=1e-5), (c, i, j)


# ---------------------------------------------------------------------------- 3. raw action latent
def test_world_model_sees_the_policys_raw_action_latent(planning_model, counting):
    """cosmos_utils.get_future_state_prediction: previous_generated_latent = the action
    sample itself; the world model's action condition frame is the generated frame, not a
    re-tiling of the decoded mean action."""
    encoded = planning_model.encode_observation(make_obs(3))
    candidates = planning_model.sample_candidates(encoded, num_candidates=2, seed=7)
    assert all(isinstance(c, CosmosPolicyOutput) for c in candidates)
    action_index = planning_model.config.layout.index_of_kind("action")
    raw = torch.stack([c.action_latent for c in candidates])
    assert raw.shape == (2, *encoded.latents.shape[1:2], *encoded.latents.shape[3:])
    chunks = np.stack([c.actions for c in candidates])
    counting.calls.clear()
    with_latents = ModelPlanner(planning_model, 1, 1, seed=7).score(encoded, chunks, action_latents=raw)
    first_world_input = counting.calls[0][1]
    torch.testing.assert_close(first_world_input[:, :, action_index], raw, rtol=0, atol=0)
    # the re-tiled frame (un-normalize, normalize, tile) is a different condition
    counting.calls.clear()
    retiled = ModelPlanner(planning_model, 1, 1, seed=7).score(encoded, chunks)
    assert not torch.equal(counting.calls[0][1][:, :, action_index], raw)
    assert not np.allclose(retiled.future_joint_positions, with_latents.future_joint_positions, atol=1e-6)
    with pytest.raises(ValueError, match="action_latents has shape"):
        planning_model.predict_outcomes(encoded, chunks, action_latents=raw[:, :3])


def test_best_of_n_passes_the_candidates_latents(planning_model, counting):
    planner = ModelPlanner(planning_model, 1, 1, seed=11)
    obs = make_obs(6)
    decision = best_of_n(planning_model, planner, obs, num_candidates=2, seed=11)
    assert not decision.fallback
    index = planning_model.config.layout.index_of_kind("action")
    raw = torch.stack([c.action_latent for c in planning_model.sample_candidates(obs, 2, seed=11)])
    # the policy's own calls see a noisy action frame; the world model's calls see exactly these
    assert any(torch.equal(x[:, :, index], raw) for _, x, _ in counting.calls)


# ---------------------------------------------------------------------------- 4. bf16 boundary
def test_bf16_latent_normalization_and_timestep():
    """wan2pt1.py: mean and scale = 1.0 / std are tensors in the model dtype and the encoder
    computes (mu - mean) * scale in it; policy_video2world_model.denoise feeds the timestep
    (c_noise) in the model dtype (use_wan_fp32_strategy is off for Cosmos Policy)."""
    model = CosmosPolicy.from_pretrained(shipped_checkpoint("tiny_cosmos"), device="cpu", dtype=torch.bfloat16,
                                         decode_future_images=False)
    obs = make_obs(8)
    video = model._raw_video(model.preprocess(obs))
    latents = model.encode_video(video)
    mu = model.vae.encode(video.to(torch.bfloat16) / 127.5 - 1.0).latent_dist.mode()
    assert mu.dtype == torch.bfloat16
    z = model.vae.config.z_dim
    mean = torch.tensor(model.vae.config.latents_mean, dtype=torch.bfloat16).view(1, z, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(model.vae.config.latents_std, dtype=torch.bfloat16).view(1, z, 1, 1, 1)
    official = ((mu - mean) * inv_std).float()
    assert torch.equal(latents, official)
    float32 = (mu.float() - mean.float()) / torch.tensor(model.vae.config.latents_std).view(1, z, 1, 1, 1)
    assert not torch.equal(latents, float32)  # the old arithmetic is measurably different

    seen = []
    hook = model.denoiser.network.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["timestep"].dtype), with_kwargs=True)
    try:
        out = model.infer(obs)
    finally:
        hook.remove()
    assert seen and all(dtype == torch.bfloat16 for dtype in seen)
    assert np.isfinite(out.actions).all()


# ---------------------------------------------------------------------------- 5. seeds
def test_candidate_i_is_seed_plus_i_drawn_alone(policy_model):
    """deploy.py best-of-N: query i calls get_action with seed + i, each sampling one [1, ...]
    noise draw; so candidate i equals the single sample for seed s + i."""
    encoded = policy_model.encode_observation(make_obs(9))
    batch = policy_model.sample_candidates(encoded, num_candidates=3, seed=40)
    for i in range(3):
        alone = policy_model.sample_candidates(encoded, num_candidates=1, seed=40 + i)[0]
        np.testing.assert_allclose(batch[i].actions, alone.actions, atol=1e-5)
        torch.testing.assert_close(batch[i].action_latent, alone.action_latent, atol=1e-5, rtol=0)


def test_seed_defaults_to_the_checkpoint_and_converted_aloha_is_195(policy_model):
    """deploy.py: seed 195 in every documented ALOHA command and as the default."""
    from cosmos_policy_ros.model.convert import ALOHA_DEPLOY_SEED, ALOHA_STORED_IMAGE_SIZE

    assert (ALOHA_DEPLOY_SEED, ALOHA_STORED_IMAGE_SIZE) == (195, 256)
    checkpoint = policy_model.checkpoint
    configured = replace(checkpoint, config=replace(checkpoint.config, seed=195))
    assert CosmosPolicy(configured).seed == 195
    assert CosmosPolicy(configured, seed=3).seed == 3  # an explicit seed wins
    assert ModelPlanner(CosmosPolicy(configured)).seed == 195


# ---------------------------------------------------------------------------- 7. replicas
def test_two_cpu_replicas_give_the_one_device_result(planning_model):
    """Issue 12 item 3: candidates split across replicas (threads), same seeds per sample."""
    other = CosmosPolicy.from_pretrained(shipped_checkpoint("tiny_cosmos_planning"), device="cpu",
                                         decode_future_images=False)
    calls = {"a": 0, "b": 0}
    for name, replica in (("a", planning_model), ("b", other)):
        inner = replica.predict_outcomes

        def spy(*args, _inner=inner, _name=name, **kwargs):
            calls[_name] += 1
            return _inner(*args, **kwargs)
        replica.predict_outcomes = spy
    try:
        encoded = planning_model.encode_observation(make_obs(10))
        chunks = np.random.default_rng(2).uniform(-0.3, 0.3, (5, 50, 14))
        one = ModelPlanner(planning_model, 2, 3, seed=195).score(encoded, chunks)
        calls.update(a=0, b=0)
        two = ModelPlanner(planning_model, 2, 3, seed=195, replicas=[other]).score(encoded, chunks)
    finally:
        del planning_model.predict_outcomes, other.predict_outcomes
    assert calls == {"a": 1, "b": 1}
    np.testing.assert_allclose(two.member_values, one.member_values, atol=1e-6)
    np.testing.assert_allclose(two.future_joint_positions, one.future_joint_positions, atol=1e-6)
    assert two.chosen_index == one.chosen_index


def test_devices_setting(tmp_path):
    import yaml

    base = yaml.safe_load(Path(load_config("aloha").path).read_text())

    def settings(**planning):
        path = tmp_path / "robot.yaml"
        path.write_text(yaml.safe_dump({**base, "planning": {**base["planning"], **planning}}))
        return load_config(path)

    assert PlanningSettings.from_config(settings()).devices == ()
    assert PlanningSettings.from_config(settings(devices=["cuda:0", "cuda:1"])).devices == ("cuda:0", "cuda:1")
    for bad in (["gpu0"], "cuda:0", ["cuda:0", "cuda:0"], [0]):
        with pytest.raises(ConfigError, match="planning.devices"):
            PlanningSettings.from_config(settings(devices=bad))
    with pytest.raises(ConfigError, match="planning.ensemble_steps"):
        PlanningSettings.from_config(settings(ensemble_steps="uniform"))
    if torch.cuda.device_count() < 8:
        with pytest.raises(ConfigError, match="'cuda:7' does not exist"):
            make_model_planner(settings(devices=["cuda:7"]))
    planner = make_model_planner(settings(devices=["cpu"]))
    assert len(planner.replicas) == 1 and planner.ensemble_steps == "linspace"


def test_policy_seed_null_takes_the_checkpoints(tmp_path):
    import yaml

    from cosmos_policy_ros.control.policies import make_policy

    base = yaml.safe_load(Path(load_config("aloha").path).read_text())

    def policy_config(**policy):
        path = tmp_path / "robot.yaml"
        path.write_text(yaml.safe_dump({**base, "policy": {**base["policy"], "type": "cosmos", **policy}}))
        return load_config(path)

    folder = tmp_path / "ckpt"
    import shutil

    shutil.copytree(shipped_checkpoint("tiny_cosmos"), folder)
    data = json.loads((folder / "cosmos_policy.json").read_text())
    (folder / "cosmos_policy.json").write_text(json.dumps({**data, "seed": 195}))
    assert base["policy"]["seed"] is None
    assert make_policy(policy_config(checkpoint=str(folder))).seed == 195
    assert make_policy(policy_config(checkpoint=str(folder), seed=7)).seed == 7
    with pytest.raises(ConfigError, match="policy.seed"):
        make_policy(policy_config(checkpoint=str(folder), seed="195"))
