"""Issue 10: the embedded-model recipe runs every stage (demos -> VAE -> initial checkpoint ->
training) at toy sizes, resumes stage by stage, and what it writes loads as a policy on
config/aloha.yaml with the top-camera layout."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from cosmos_policy_ros.config import load_config
from cosmos_policy_ros.learning.embedded_model import WORKSPACE_CROP, EmbeddedRecipe, build_embedded_model
from cosmos_policy_ros.learning.vae import (VaeSettings, clips, foreground, psnr, reconstruction_loss, shifted,
                                           small_object_response, static_scene, episode_start_change)
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
    # the policy sees the workspace region its VAE was trained on
    assert config["crop_box"] == list(WORKSPACE_CROP) == vae["settings"]["crop_box"]
    assert np.isfinite(vae["episode_start_latent_change"])
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
    assert actions.shape == (EmbeddedRecipe().chunk_size, 14) and np.all(np.isfinite(actions))


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


def _scenes_with_a_small_object(count: int = 12, size: int = 32) -> np.ndarray:
    """Grey frames, each with a 2x2 red "cube" somewhere else: the static scene has no cube."""
    frames = np.full((count, size, size, 3), 100, np.uint8)
    rng = np.random.default_rng(0)
    for frame in frames:
        y, x = rng.integers(0, size - 2, 2)
        frame[y:y + 2, x:x + 2] = (220, 20, 20)
    return frames


def test_the_static_scene_excludes_a_moving_object_and_the_foreground_is_that_object():
    frames = _scenes_with_a_small_object()
    scene = static_scene(frames)
    assert torch.allclose(scene, torch.full_like(scene, 100 / 127.5 - 1.0))
    mask = foreground(clips(frames[:1]), scene)[0, 0, 1]
    cube = np.argwhere(frames[0, :, :, 1] == 20)
    assert mask[tuple(cube.T)].min() > 0.5 and mask.sum() == pytest.approx(mask[tuple(cube.T)].sum())


def test_a_reconstruction_that_drops_the_small_object_is_penalised_far_more_than_by_plain_mse():
    """The embedded VAE drops the 2-pixel cube (an image-wide MSE barely notices), leaving the
    policy blind to where it is: the opt-in terms weigh the foreground and the worst pixels, and
    the foreground PSNR reports what the image-wide PSNR hides."""
    frames = _scenes_with_a_small_object()
    scene = static_scene(frames)
    x = clips(frames)
    dropped = scene[None, :, None].expand_as(x).clone()
    dropped[:, :, 0] = -1.0
    opt_in = VaeSettings(foreground_weight=0.0, foreground_loss_weight=1.0, worst_pixel_loss_weight=1.0)
    plain = reconstruction_loss(dropped, x, scene, VaeSettings(foreground_weight=0.0))
    assert plain == pytest.approx(float((dropped - x)[:, :, 1:].pow(2).mean()))
    assert reconstruction_loss(dropped, x, scene, opt_in) > 50 * plain
    assert reconstruction_loss(x, x, scene, opt_in) == 0
    # the shipped recipe's mean-frame weighting, unchanged
    mean_frame = torch.from_numpy(frames.astype(np.float32).mean(axis=0) / 127.5 - 1.0).permute(2, 0, 1)
    weight = 1.0 + 20.0 * (x - mean_frame[None, :, None]).abs().mean(dim=1, keepdim=True)
    assert reconstruction_loss(dropped, x, scene, VaeSettings(), mean_frame) == pytest.approx(
        float((weight * (dropped - x).pow(2)).mean()))
    with pytest.raises(ValueError, match="mean frame"):
        reconstruction_loss(dropped, x, scene, VaeSettings())
    # the same reconstruction, scored image-wide and over the foreground
    class Drops:
        def encode(self, x):
            return type("E", (), {"latent_dist": type("D", (), {"mode": lambda self: x})()})()

        def decode(self, z):
            return type("O", (), {"sample": torch.cat([z[:, :, :1], scene[None, :, None].expand_as(z[:, :, 1:])], 2)})()

    assert psnr(Drops(), frames) > 25 and psnr(Drops(), frames, scene=scene) < 10


def test_shifts_with_the_unshifted_mean_frame_weight_are_refused_before_any_work(tmp_path):
    from cosmos_policy_ros.learning.vae import train_vae

    with pytest.raises(ValueError, match="shift_px needs foreground_weight 0"):
        train_vae(tmp_path / "no_data", tmp_path / "vae", settings=VaeSettings(shift_px=2))
    assert not (tmp_path / "vae").exists()


def test_shifted_training_frames_move_with_their_static_scene():
    """The foreground of a shifted frame is still just the object: frame and scene move together."""
    frames = np.full((12, 32, 32, 3), 100, np.uint8)
    frames[:, :, :4] = 30  # a dark band on the left, part of the static scene
    for frame, (y, x) in zip(frames, np.random.default_rng(0).integers(6, 24, (12, 2))):
        frame[y:y + 2, x:x + 2] = (220, 20, 20)
    scene = static_scene(frames)
    moved, scenes = shifted(frames, scene, 3, np.random.default_rng(0))
    assert moved.shape == frames.shape and scenes.shape == (len(frames), 3, 32, 32)
    assert any(not np.array_equal(a, b) for a, b in zip(moved, frames))
    for frame, frame_scene in zip(moved, scenes):
        mask = foreground(clips(frame[None]), frame_scene[None])[0, 0, 1]
        assert (mask > 0.5).sum() == 4 and mask.sum() == pytest.approx(mask[mask > 0.5].sum())
        assert (frame[:, :, 0] == 220).sum() == 4  # the object is whole (it is 6 px from every edge)


def test_the_small_object_probe_tells_an_encoder_that_sees_it_from_one_that_drops_it():
    class Encoder:
        config = type("C", (), {"latents_std": None, "z_dim": 3})()

        def __init__(self, blind):
            self.blind = blind

        def encode(self, x):
            z = torch.zeros_like(x) if self.blind else x
            return type("E", (), {"latent_dist": type("D", (), {"mode": lambda self: z})()})()

    frame = np.full((32, 32, 3), 100, np.uint8)
    seen = small_object_response(Encoder(blind=False), frame)
    assert 0 < seen["2px"] < seen["4px"] < seen["8px"]
    assert seen["2px"] == pytest.approx(4 / 32 ** 2 * np.mean(np.abs(np.array([220, 20, 20]) - 100)) / 127.5)
    assert set(small_object_response(Encoder(blind=True), frame).values()) == {0.0}
    # two episode starts that differ only in where a 2 px object lies
    starts = np.stack([frame, frame])
    starts[0, 4:6, 4:6] = starts[1, 20:22, 20:22] = (220, 20, 20)
    assert episode_start_change(Encoder(blind=False), starts) == pytest.approx(2 * seen["2px"])
    assert episode_start_change(Encoder(blind=True), starts) == 0.0


def test_offline_metrics_and_an_in_process_closed_loop_episode(quick_model):
    """offline-eval's pieces on the toy checkpoint: finite L1s against their baselines, and one
    short in-process episode through the executor logic (the policy asked for every chunk)."""
    from cosmos_policy_ros.learning.offline_eval import closed_loop, offline_metrics
    from cosmos_policy_ros.model.cosmos_policy import CosmosPolicy

    root, out, _ = quick_model
    policy = CosmosPolicy.from_pretrained(out, device="cpu", decode_future_images=False)
    metrics = offline_metrics(policy, root / "work" / "demos", ["episode_1.hdf5", "episode_2.hdf5"], every=20)
    assert metrics["chunks"] >= 2 and metrics["first_chunks"] == 2
    for key in ("action_l1", "mean_chunk_action_l1", "world_model_future_proprio_l1", "no_change_l1",
                "first_chunk_action_l1", "mean_first_chunk_action_l1"):
        assert np.isfinite(metrics[key]) and metrics[key] >= 0
    assert metrics["image_swap_action_change"] > 0  # the swapped camera image reaches the model
    assert np.isfinite(metrics["first_chunk_variation_captured"])
    calls = []
    infer = policy.infer
    policy.infer = lambda obs: calls.append(obs.stamp_ns) or infer(obs)
    results = closed_loop(policy, [100000], episode_length_s=0.9, progress=lambda line: None)
    assert results[0]["seed"] == 100000 and results[0]["max_reward"] >= 0
    assert len(calls) == 1  # a 25-step chunk at 25 Hz (1 s) covers the whole 0.9 s episode


def test_a_time_budget_fits_the_vae_step_count_and_a_resume_keeps_it(quick_model, tmp_path):
    """A budget far below what --steps would take: the run measures its rate after 20 steps,
    stops at the fitted count (reported) and a resumed run keeps that count."""
    from cosmos_policy_ros.learning.vae import STATE_FILE, train_vae

    root, _, _ = quick_model
    settings = VaeSettings(image_size=32, base_dim=4, steps=10**6, batch_size=2, held_out_episodes=1)
    report = train_vae(root / "work" / "demos", tmp_path / "vae", settings=settings, progress=lambda _: None,
                       time_budget_s=8.0)
    assert 20 <= report["steps_run"] < 10**6
    state = torch.load(tmp_path / "vae" / STATE_FILE, weights_only=False)
    assert state["total_steps"] == state["step"] == report["steps_run"]
    again = train_vae(root / "work" / "demos", tmp_path / "vae", settings=settings, resume=True,
                      progress=lambda _: None, time_budget_s=8.0)
    assert again["steps_run"] == report["steps_run"]


def test_a_fitted_policy_run_length_sets_the_schedule_and_survives_a_resume(quick_model, tmp_path):
    from cosmos_policy_ros.learning.trainer import Trainer, TrainSettings
    from cosmos_policy_ros.learning.training_data import EpisodeDataset
    from cosmos_policy_ros.learning.schedule import LinearWarmupDecaySchedule
    from cosmos_policy_ros.model.checkpoint import CosmosCheckpoint

    root, _, _ = quick_model
    checkpoint = CosmosCheckpoint.from_pretrained(root / "work" / "initial", device="cpu", dtype=torch.float32)
    settings = TrainSettings(batch_size=2, augment=False, schedule=LinearWarmupDecaySchedule(10, 20000))
    dataset = EpisodeDataset(checkpoint.config, [root / "work" / "demos"], task_override="transfer the cube")
    trainer = Trainer(checkpoint, dataset, settings)
    assert trainer.precache(progress=lambda _: None) == len(dataset) == len(trainer.latent_cache)
    assert trainer.fit_total_steps(50) == 50
    assert trainer.lr_at(50) == pytest.approx(settings.lr * 0.3)  # the decay now ends at the fitted step
    trainer.train_step()
    trainer.save(tmp_path / "run")
    resumed = Trainer(CosmosCheckpoint.from_pretrained(tmp_path / "run", device="cpu", dtype=torch.float32),
                      dataset, settings)
    resumed.load_state(tmp_path / "run")
    assert resumed.total_steps == 50 and resumed.lr_at(50) == pytest.approx(settings.lr * 0.3)
    dataset.close()


def test_variation_captured_is_the_share_of_the_across_episode_variation_reproduced():
    from cosmos_policy_ros.learning.offline_eval import variation_captured

    rng = np.random.default_rng(0)
    demonstrated = rng.normal(size=(6, 50, 14))
    mean = demonstrated.mean(axis=0)
    assert variation_captured(demonstrated, demonstrated) == pytest.approx(1.0)
    # aims 40 % of the way from the average episode to this one (plus a constant bias)
    assert variation_captured(demonstrated, mean + 0.4 * (demonstrated - mean) + 0.3) == pytest.approx(0.4)
    blind = np.broadcast_to(mean, demonstrated.shape)  # the same chunk whatever the scene
    assert variation_captured(demonstrated, blind) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="equal shape"):
        variation_captured(demonstrated, demonstrated[:, :10])
    with pytest.raises(ValueError, match="two or more"):
        variation_captured(demonstrated[:1], demonstrated[:1])


def test_the_recipe_transformer_has_a_position_embedding_that_trains():
    """The recipe's transformer adds the learnable (t, h, w) position embedding, drawn from
    N(0, 1): at diffusers' zero init its normalisation has a ~1/eps gradient that would swamp
    the gradient clip, so every other weight would barely move."""
    from diffusers import CosmosTransformer3DModel

    from cosmos_policy_ros.learning.embedded_model import init_position_embedding, transformer_config
    from cosmos_policy_ros.model.denoiser import DenoiserNetwork

    recipe = EmbeddedRecipe().quick()
    assert transformer_config(recipe)["extra_pos_embed_type"] == "learnable"
    assert transformer_config(replace(recipe, position_embedding=None))["extra_pos_embed_type"] is None

    def embed_grad_share(init: bool) -> float:
        torch.manual_seed(0)
        model = CosmosTransformer3DModel(**transformer_config(recipe))
        if init:
            init_position_embedding(model)
        out = DenoiserNetwork(model)(torch.randn(1, 16, 3, 8, 8), torch.full((1, 3), 5.0),
                                     torch.tensor([[1.0, 0.0, 0.0]]), torch.randn(1, 4, recipe.text_embed_dim))
        out.square().mean().backward()
        grads = {name: p.grad.norm() for name, p in model.named_parameters() if p.grad is not None}
        embed = sum(g for name, g in grads.items() if "learnable_pos_embed" in name)
        return float(embed / sum(grads.values()))

    torch.manual_seed(0)
    model = CosmosTransformer3DModel(**transformer_config(recipe))
    init_position_embedding(model)
    tables = [model.learnable_pos_embed.pos_emb_h, model.learnable_pos_embed.pos_emb_w]
    assert all(0.8 < float(t.detach().std()) < 1.2 for t in tables)
    assert embed_grad_share(init=False) > 0.99  # zero init: the embedding's gradient is everything
    assert embed_grad_share(init=True) < 0.5
