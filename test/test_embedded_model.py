"""Issue 10: the embedded-model recipe runs every stage (demos -> VAE -> initial checkpoint ->
training) at toy sizes, resumes stage by stage, and what it writes loads as a policy on
config/aloha.yaml with the top-camera layout."""
import json

import numpy as np
import pytest
import torch

from cosmos_policy_ros.config import load_config
from cosmos_policy_ros.learning.embedded_model import EmbeddedRecipe, build_embedded_model
from cosmos_policy_ros.learning.vae import VaeSettings, clips, psnr
from cosmos_policy_ros.model.layout import aloha_top_camera_layout
from cosmos_policy_ros.types import Observation


@pytest.fixture(scope="module")
def quick_model(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("embedded")
    lines = []
    out = build_embedded_model(root / "out", root / "work", EmbeddedRecipe(seed=3).quick(), progress=lines.append)
    return root, out, lines


def test_quick_recipe_writes_a_checkpoint_with_the_top_camera_layout(quick_model):
    root, out, lines = quick_model
    config = json.loads((out / "cosmos_policy.json").read_text())
    assert config["camera_names"] == ["cam_high"] and config["image_size"] == 64
    assert [s["name"] for s in config["layout"]["slots"]] == [s.name for s in aloha_top_camera_layout().slots]
    vae = json.loads((out / "vae_report.json").read_text())
    assert vae["held_out_frames"] > 0 and np.isfinite(vae["held_out_psnr_db"])
    recipe = json.loads((out / "recipe.json").read_text())
    assert set(recipe["timings_s"]) >= {"demos_s", "vae_s", "train_s", "total_s"}
    assert any("demonstrations: running" in line for line in lines)


def test_a_second_run_skips_every_finished_stage(quick_model):
    root, _, _ = quick_model
    lines = []
    build_embedded_model(root / "out2", root / "work", EmbeddedRecipe(seed=3).quick(), progress=lines.append)
    skipped = [line for line in lines if "skipped" in line]
    assert len(skipped) == 4, lines


def test_the_trained_checkpoint_runs_as_a_policy_on_the_aloha_config(quick_model):
    from cosmos_policy_ros.control.policies import make_cosmos_policy

    _, out, _ = quick_model
    config = load_config("aloha")
    policy = make_cosmos_policy(str(out), "torch", 0, config)
    rng = np.random.default_rng(0)
    obs = Observation(stamp_ns=0, images={"cam_high": rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)},
                      joint_positions=np.zeros(14), task="transfer the cube")
    actions = policy.infer(obs).actions
    assert actions.shape == (50, 14) and np.all(np.isfinite(actions))


def test_vae_clips_have_the_layouts_shape_and_psnr_is_exact_for_a_perfect_reconstruction():
    frames = np.random.default_rng(1).integers(0, 255, (3, 8, 8, 3), dtype=np.uint8)
    x = clips(frames)
    assert x.shape == (3, 3, 5, 8, 8)
    assert torch.all(x[:, :, 0] == -1.0) and torch.equal(x[:, :, 1], x[:, :, 4])

    class Identity:
        def encode(self, x):
            return type("E", (), {"latent_dist": type("D", (), {"mode": lambda self: x})()})()

        def decode(self, z):
            return type("O", (), {"sample": z})()

    assert psnr(Identity(), frames) > 100  # no error: the clamp-limited ceiling
    assert VaeSettings().image_size == 64


def test_offline_metrics_and_an_in_process_closed_loop_episode(quick_model):
    """offline-eval's pieces on the toy checkpoint: finite L1s against their baselines, and one
    short in-process episode through the executor logic (the policy asked for every chunk)."""
    from cosmos_policy_ros.learning.offline_eval import closed_loop, offline_metrics
    from cosmos_policy_ros.model.cosmos_policy import CosmosPolicy

    root, out, _ = quick_model
    policy = CosmosPolicy.from_pretrained(out, device="cpu", decode_future_images=False)
    metrics = offline_metrics(policy, root / "work" / "demos", ["episode_2.hdf5"], every=20)
    assert metrics["chunks"] >= 1
    for key in ("action_l1", "mean_chunk_action_l1", "world_model_future_proprio_l1", "no_change_l1"):
        assert np.isfinite(metrics[key]) and metrics[key] >= 0
    calls = []
    infer = policy.infer
    policy.infer = lambda obs: calls.append(obs.stamp_ns) or infer(obs)
    results = closed_loop(policy, [100000], episode_length_s=1.0, progress=lambda line: None)
    assert results[0]["seed"] == 100000 and results[0]["max_reward"] >= 0
    assert len(calls) == 1  # a 50-step chunk at 25 Hz covers the whole 1 s episode
