"""Fine-tuning: samples from ALOHA HDF5 episodes, the official data/objective mix, noise,
loss masking (V(s') value samples), optimiser details (betas, schedule, NaN gradients,
accumulation), learning on a tiny synthetic dataset, checkpoint round trip, resume, CLI."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from cosmos_policy_ros.learning import episodes
from cosmos_policy_ros.learning.schedule import (
    PLANNING_SCHEDULE,
    POLICY_SCHEDULE,
    LinearWarmupDecaySchedule,
)
from cosmos_policy_ros.learning.trainer import loss_frames_per_mode
from cosmos_policy_ros.learning.training import (
    DataMix,
    EpisodeDataset,
    NoiseConfig,
    Trainer,
    TrainingDataError,
    TrainSettings,
    add_train_arguments,
    generated_frame_loss,
    run_train,
    training_state_path,
)
from cosmos_policy_ros.model.checkpoint import ALOHA_JOINT_NAMES, CosmosCheckpoint
from cosmos_policy_ros.model.cosmos_policy import CosmosPolicy
from cosmos_policy_ros.model.layout import MODES, aloha_layout
from cosmos_policy_ros.model.tiny import (
    TINY_TASKS,
    build_tiny_checkpoint,
    make_tiny_checkpoint,
)
from cosmos_policy_ros.model.preprocessing import preprocess_image
from cosmos_policy_ros.types import Observation

CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")
REPO = Path(__file__).resolve().parents[1]


def write_episode(path: Path, seed: int, steps: int = 10, rate_hz: float = 25.0, success: bool = True,
                  image_size: int = 64, task: str = TINY_TASKS[0], with_value: bool = True,
                  score: float | None = None) -> None:
    """A learnable episode: joints move at a constant per-episode velocity, the command is
    the next joint position, each camera's brightness encodes one joint, value = gamma^(T-1-t)."""
    rng = np.random.default_rng(seed)
    start = rng.uniform(-0.4, 0.4, 14)
    start[[6, 13]] = rng.uniform(0.2, 0.8, 2)
    velocity = rng.uniform(-0.01, 0.01, 14) * 25.0 / rate_hz
    qpos = start + velocity * np.arange(steps)[:, None]
    images = {}
    for i, cam in enumerate(CAMERAS):
        level = ((qpos[:, i] + 1.2) / 2.4 * 255).clip(0, 255).astype(np.uint8)
        frames = np.zeros((steps, image_size, image_size, 3), np.uint8)
        frames[..., i] = level[:, None, None]
        frames[:, : image_size // 2, :, (i + 1) % 3] = 200
        images[cam] = frames
    with h5py.File(path, "w") as f:
        f.attrs["success"] = success
        if score is not None:
            f.attrs["success_score"] = score
        f.attrs["control_rate_hz"] = rate_hz
        f.attrs["task_description"] = task
        f.attrs["joint_names"] = list(ALOHA_JOINT_NAMES)
        obs = f.create_group("observations")
        obs.create_dataset("qpos", data=qpos)
        f.create_dataset("action", data=qpos + velocity)
        if with_value:
            f.create_dataset("value", data=(float(success) * 0.99 ** np.arange(steps - 1, -1, -1)).astype(np.float32))
        group = obs.create_group("images")
        for cam, frames in images.items():
            group.create_dataset(cam, data=frames)


def write_folder(folder: Path, episodes: int, steps: int = 10, success: bool = True, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(episodes):
        write_episode(folder / f"episode_{i}.hdf5", seed + i, steps=steps, success=success)
    return folder


@pytest.fixture(scope="module", autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("demos"), episodes=3, steps=8)


@pytest.fixture(scope="module")
def latent_cache():
    """VAE latents shared by every trainer on the ``demos`` folder (encoding dominates CPU time)."""
    return {}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0)


def make_trainer(demos, cache, rollouts=(), planning=False, **settings):
    """Fast defaults for CPU tests: no augmentation (cached encodings), constant lr."""
    checkpoint = make_tiny_checkpoint(0, planning=planning)
    dataset = EpisodeDataset(checkpoint.config, [demos] if demos else [], rollouts)
    settings = {"augment": False, "schedule": None, **settings}
    return Trainer(checkpoint, dataset, TrainSettings(**settings), latent_cache=cache)


# ---------------------------------------------------------------------------- data
def test_held_camera_frames_are_preprocessed_once_and_changed_frames_never_reuse_a_stale_one(tmp_path):
    """A camera slower than the control rate repeats frames: each repeat gets the first one's
    preprocessed array (decoded once), and a frame whose pixels changed gets its own."""
    path = tmp_path / "episode_0.hdf5"
    write_episode(path, seed=3, steps=8)
    with h5py.File(path, "r+") as f:
        frames = f["observations/images/cam_high"]
        held = frames[...]
        held[1] = held[0]  # step 1 repeats step 0; step 2 differs again
        frames[...] = held
    dataset = EpisodeDataset(make_tiny_checkpoint(0).config, [tmp_path])
    images = [dataset.sample(t).images["cam_high"] for t in range(4)]
    assert images[1] is images[0]
    assert not np.array_equal(images[2], images[1]) and images[3] is not images[2]
    cfg = dataset.config
    for t in range(4):
        expected = preprocess_image(held[t], cfg.image_size, cfg.center_crop_area, cfg.jpeg_quality)
        assert np.array_equal(images[t], expected)
    dataset.close()


def test_sample_is_current_obs_action_chunk_future_obs_and_value(tmp_path):
    write_episode(tmp_path / "episode_0.hdf5", 0, steps=60)
    config = make_tiny_checkpoint(0).config
    dataset = EpisodeDataset(config, [tmp_path])
    assert len(dataset) == 60
    with h5py.File(tmp_path / "episode_0.hdf5") as f:
        qpos, action, value = f["observations/qpos"][()], f["action"][()], f["value"][()]
    sample = dataset.sample(3)
    np.testing.assert_allclose(sample.joint_positions, qpos[3])
    np.testing.assert_allclose(sample.actions, action[3:53])
    np.testing.assert_allclose(sample.future_joint_positions, qpos[53])
    assert sample.value == pytest.approx(value[53])
    assert set(sample.images) == set(CAMERAS) and sample.images["cam_high"].shape == (64, 64, 3)
    end = dataset.sample(40)  # chunk runs past the end: last command repeated, s' = last step
    np.testing.assert_allclose(end.actions[-1], action[-1])
    np.testing.assert_allclose(end.future_joint_positions, qpos[-1])


def test_episodes_are_resampled_to_the_checkpoint_rate(tmp_path):
    write_episode(tmp_path / "episode_0.hdf5", 0, steps=121, rate_hz=50.0, with_value=False)
    config = make_tiny_checkpoint(0).config  # 25 Hz, chunk 50
    dataset = EpisodeDataset(config, [tmp_path])
    assert len(dataset) == 61
    with h5py.File(tmp_path / "episode_0.hdf5") as f:
        qpos, action = f["observations/qpos"][()], f["action"][()]
    sample = dataset.sample(2)
    np.testing.assert_allclose(sample.joint_positions, qpos[4])
    np.testing.assert_allclose(sample.actions[:5], action[4:14:2])
    # No /value: the success attribute gives the discounted return (gamma 0.998 per 25 Hz step).
    assert dataset.sample(60).value == pytest.approx(1.0)


def test_training_derives_missing_value_targets_with_the_episode_modules_gamma_and_rule(tmp_path, monkeypatch):
    # One default gamma for the package (the episode module's), read at load time, and the
    # official rule: a partial score (0.4) gives full-success targets.
    monkeypatch.setattr(episodes, "DEFAULT_GAMMA", 0.9)
    write_episode(tmp_path / "episode_0.hdf5", 0, steps=60, with_value=False, score=0.4)
    dataset = EpisodeDataset(make_tiny_checkpoint(0).config, [tmp_path])
    assert dataset.sample(0).value == pytest.approx(0.9 ** (59 - 50), rel=1e-5)  # s' is step 50


@pytest.mark.parametrize("breakage, message", [
    ("missing", "dataset folder not found"),
    ("empty", "no episode_*.hdf5 files"),
    ("not_hdf5", "not a readable HDF5 file"),
    ("no_action", "/action missing"),
    ("wrong_dof", "expected [T, 14]"),
    ("no_camera", "/observations/images/cam_high missing"),
])
def test_clear_error_on_bad_dataset_folder(tmp_path, breakage, message):
    folder = tmp_path / "data"
    if breakage != "missing":
        folder.mkdir()
    path = folder / "episode_0.hdf5"
    if breakage == "not_hdf5":
        path.write_text("not an hdf5 file")
    elif breakage in ("no_action", "wrong_dof", "no_camera"):
        write_episode(path, 0, steps=4)
        with h5py.File(path, "a") as f:
            if breakage == "no_action":
                del f["action"]
            elif breakage == "wrong_dof":
                del f["observations/qpos"]
                f["observations"].create_dataset("qpos", data=np.zeros((4, 7)))
            else:
                del f["observations/images/cam_high"]
    config = make_tiny_checkpoint(0).config
    with pytest.raises(TrainingDataError, match=message.replace("[", r"\[").replace("*", r"\*")) as err:
        EpisodeDataset(config, [folder])
    assert str(folder) in str(err.value)


# ---------------------------------------------------------------------------- objective
def _mix_counts(trainer, draws=60):
    """Per drawn sample: (source, success, mode) counts over many batches."""
    counts = {}
    for _ in range(draws):
        batch = trainer.draw_batch()
        for i, m in zip(batch["indices"].tolist(), batch["modes"].tolist()):
            ep = trainer.dataset.episodes[trainer.dataset.key(i)[0]]
            key = (ep.source, ep.success, MODES[m])
            counts[key] = counts.get(key, 0) + 1
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()}


def test_demonstration_only_mix_is_policy_50_world_model_25_value_25(demos, latent_cache):
    # Official policy run: demos are also success rollouts, drawn 50/50 (demonstration_sampling_prob 0.5).
    trainer = make_trainer(demos, latent_cache, batch_size=64)
    share = _mix_counts(trainer)
    by_mode = {m: sum(v for k, v in share.items() if k[2] == m) for m in MODES}
    np.testing.assert_allclose([by_mode[m] for m in MODES], [0.5, 0.25, 0.25], atol=0.02)


def test_planning_mix_10_percent_demos_and_balanced_rollouts(tmp_path, demos, latent_cache):
    # Official planning run: demonstration_sampling_prob 0.1 (policy only), rollouts 90 %,
    # successes and failures 50/50 however many of each (here 1 success vs 3 failure episodes),
    # each rollout sample world model or value 50/50.
    successes = write_folder(tmp_path / "rollouts_ok", episodes=1, steps=8, success=True, seed=10)
    failures = write_folder(tmp_path / "rollouts_bad", episodes=3, steps=8, success=False, seed=20)
    trainer = make_trainer(demos, latent_cache, rollouts=[successes, failures], batch_size=64)
    assert trainer.mix == DataMix(demo_fraction=0.1)
    share = _mix_counts(trainer)
    assert share.get(("demo", True, "world_model"), 0) == 0 and share.get(("demo", True, "value"), 0) == 0
    assert share[("demo", True, "policy")] == pytest.approx(0.1, abs=0.015)
    assert not any(k[0] == "rollout" and k[2] == "policy" for k in share)
    for success in (True, False):
        pool = {m: share.get(("rollout", success, m), 0) for m in MODES}
        assert pool["world_model"] + pool["value"] == pytest.approx(0.45, abs=0.02)
        assert pool["world_model"] == pytest.approx(pool["value"], abs=0.02)
    # Rollouts only: no demonstrations at all.
    only = make_trainer(None, latent_cache, rollouts=[successes, failures], batch_size=64)
    assert all(k[0] == "rollout" for k in _mix_counts(only, draws=10))


def test_training_noise_levels_follow_the_hybrid_recipe():
    noise = NoiseConfig(video_noise_multiplier=1.0)
    sigma = noise.sample(20000, 11, torch.Generator().manual_seed(0)).numpy()
    # 70 % log-normal (log sigma ~ N(log 4, 1.2)), 30 % uniform over [1, 85]:
    # P(sigma < 1) = 0.7 * Phi(-log 4 / 1.2); E[sigma] = 0.7 * exp(log 4 + 1.2^2 / 2) + 0.3 * 43.
    assert np.mean(sigma < 1.0) == pytest.approx(0.7 * 0.1241, abs=0.01)
    assert sigma.mean() == pytest.approx(0.7 * 4 * np.exp(0.72) + 0.3 * 43, rel=0.05)
    assert sigma.min() > 0
    scaled = NoiseConfig().sample(20000, 11, torch.Generator().manual_seed(0)).numpy()
    np.testing.assert_allclose(scaled, sigma * np.sqrt(11), rtol=1e-5)


def test_frames_outside_the_loss_mask_receive_no_loss_and_no_gradient():
    torch.manual_seed(0)
    x0 = torch.randn(2, 16, 11, 8, 8)
    pred = torch.randn(2, 16, 11, 8, 8, requires_grad=True)
    cond = torch.zeros(2, 11, dtype=torch.bool)
    cond[0, :5] = True  # policy-like: s is a condition
    cond[1, :10] = True  # value-like: only V generated
    per_sample, count = generated_frame_loss(pred, x0, ~cond, torch.tensor([2.0, 3.0]))
    per_sample.sum().backward()
    grad_per_frame = pred.grad.abs().sum(dim=(1, 3, 4))
    assert torch.all(grad_per_frame[cond] == 0) and torch.all(grad_per_frame[~cond] > 0)
    assert count.tolist() == [6 * 16 * 64, 1 * 16 * 64]
    changed = pred.detach().clone()
    changed[cond[:, None, :, None, None].expand_as(changed)] += 100.0  # every condition frame
    again, _ = generated_frame_loss(changed, x0, ~cond, torch.tensor([2.0, 3.0]))
    torch.testing.assert_close(again, per_sample.detach())
    changed[1, :, 10] += 1.0  # sample 1's generated value frame
    assert generated_frame_loss(changed, x0, ~cond, torch.tensor([2.0, 3.0]))[0][1] > per_sample[1]


def test_value_samples_of_the_planning_model_take_loss_on_the_value_frame_only():
    # Official: with mask_current_state_action_for_value_prediction (the V(s') planning model)
    # s and a are masked inputs in value mode, and the loss mask keeps only the value frame.
    layout = aloha_layout(value_from_future_state_only=True)
    value = MODES.index("value")
    masked_inputs = ~layout.condition_frames("value")
    assert masked_inputs.sum() > 1  # s and a are not conditions ...
    frames = loss_frames_per_mode(layout)
    assert frames[value].nonzero().flatten().tolist() == [layout.index_of_kind("value")]  # ... and get no loss
    for mode in ("policy", "world_model"):
        assert torch.equal(frames[MODES.index(mode)], ~layout.condition_frames(mode))
    plain = aloha_layout()
    assert torch.equal(loss_frames_per_mode(plain)[value], ~plain.condition_frames("value"))


def test_planning_trainer_value_loss_ignores_the_masked_current_state(tmp_path, latent_cache):
    rollouts = write_folder(tmp_path / "rollouts", episodes=1, steps=4, success=False)
    trainer = make_trainer(None, {}, rollouts=[rollouts], planning=True, batch_size=2)
    x0, text = trainer.clean_latents([0, 1])
    modes = torch.full((2,), MODES.index("value"))
    sigma, noise = torch.tensor([2.0, 5.0]), torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    _, count = trainer._forward(x0, text, modes, sigma, noise)
    assert count.tolist() == [x0[0, :, 0].numel()] * 2  # one latent frame per sample


# ---------------------------------------------------------------------------- learning
def test_training_learns_all_three_objectives(demos, latent_cache):
    # Seeds 0-3 gave eval-loss ratios of 0.47-0.53 (policy, world model) and 0.28-0.41 (value).
    trainer = make_trainer(demos, latent_cache, batch_size=4, lr=2e-3, seed=0)
    probe = list(range(0, len(trainer.dataset), 4))
    before = trainer.eval_losses(probe)
    seen = {m: 0 for m in MODES}
    for _ in range(100):
        result = trainer.train_step()
        for m, (_, count) in result.objective_sums.items():
            seen[m] += count > 0
    after = trainer.eval_losses(probe)
    ratios = {m: after[m] / before[m] for m in MODES}
    print(f"eval loss before {before} after {after} ratio {ratios}")
    assert all(seen[m] > 40 for m in MODES)
    assert all(ratio < 0.6 for ratio in ratios.values()), ratios


# ---------------------------------------------------------------------------- checkpoints
def test_saved_checkpoint_loads_and_runs_as_cosmos_policy(tmp_path, demos, latent_cache):
    trainer = make_trainer(demos, latent_cache, batch_size=4, lr=1e-3)
    trainer.train_step()
    out = tmp_path / "finetuned"
    trainer.save(out)
    assert training_state_path(out).is_file() and not (out / "training_state.pt").exists()
    loaded = CosmosCheckpoint.from_pretrained(out)
    for name, param in trainer.network.transformer.state_dict().items():
        torch.testing.assert_close(loaded.transformer.state_dict()[name], param)
    policy = CosmosPolicy.from_pretrained(out, device="cpu", decode_future_images=False)
    rng = np.random.default_rng(0)
    obs = Observation(stamp_ns=0, images={c: rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for c in CAMERAS},
                      joint_positions=np.zeros(14), task=TINY_TASKS[0])
    output = policy.infer(obs)
    assert output.actions.shape == (50, 14) and np.all(np.isfinite(output.actions))


def test_resume_gives_the_same_next_step_as_an_uninterrupted_run(tmp_path, demos, latent_cache):
    settings = dict(batch_size=4, lr=1e-3, seed=3)
    straight = make_trainer(demos, latent_cache, **settings)
    losses = [straight.train_step().loss for _ in range(3)]

    first = make_trainer(demos, latent_cache, **settings)
    for _ in range(2):
        first.train_step()
    out = tmp_path / "run"
    first.save(out)
    checkpoint = CosmosCheckpoint.from_pretrained(out)
    resumed = Trainer(checkpoint, EpisodeDataset(checkpoint.config, [demos]),
                      TrainSettings(augment=False, schedule=None, **settings), latent_cache=latent_cache)
    resumed.load_state(out)
    assert resumed.step == 2
    result = resumed.train_step()
    assert result.step == 3
    assert result.loss == pytest.approx(losses[2], rel=1e-5, abs=1e-7)


# ---------------------------------------------------------------------------- CLI
def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return parser.parse_args(list(argv))


def test_run_train_reports_bad_data_without_traceback(tmp_path, tiny_dir, capsys):
    (tmp_path / "empty").mkdir()
    code = run_train(_args("--checkpoint", str(tiny_dir), "--data", str(tmp_path / "empty"), "--out",
                           str(tmp_path / "out"), "--device", "cpu"))
    assert code == 2
    assert "no episode_*.hdf5 files" in capsys.readouterr().err
    assert run_train(_args("--checkpoint", str(tiny_dir), "--out", str(tmp_path / "out"), "--device", "cpu")) == 2


def test_cli_train_prints_per_objective_losses_and_resumes(tmp_path, tiny_dir):
    data = write_folder(tmp_path / "data", episodes=1, steps=3)
    out = tmp_path / "out"
    common = ["--checkpoint", str(tiny_dir), "--data", str(data), "--out", str(out), "--batch-size", "2",
              "--log-every", "10", "--device", "cpu", "--warmup-steps", "5", "--decay-steps", "15",
              "--augment-variants", "2"]
    run = subprocess.run([sys.executable, "-m", "cosmos_policy_ros.cli", "train", *common, "--steps", "20",
                          "--save-every", "10"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stdout.splitlines() if line.startswith("[train] step 20/20")]
    assert lines and all(f"{m} " in lines[0] for m in MODES), run.stdout
    assert (out / "cosmos_policy.json").is_file() and training_state_path(out).is_file()
    assert len((out / "training_log.jsonl").read_text().splitlines()) == 2
    assert run_train(_args(*common, "--steps", "20")) == 2  # --out taken: needs --resume
    assert run_train(_args(*common, "--steps", "22", "--resume")) == 0
    assert torch.load(training_state_path(out), weights_only=False)["step"] == 22


# ---------------------------------------------------------------------------- optimisation
def test_official_learning_rate_schedule_shape():
    # LambdaLinearScheduler, cycle_lengths [20000, inf], warm_up_steps [2000, 0],
    # f_start [1e-6, 0.06], f_max [1, 0.06], f_min [0.3, 0.06]: step n runs at lr * f(n).
    f = POLICY_SCHEDULE
    assert f(0) == pytest.approx(1e-6)
    assert f(1000) == pytest.approx(1e-6 + (1 - 1e-6) * 0.5)
    assert f(2000) == pytest.approx(1.0)
    assert f(11000) == pytest.approx(0.65)
    assert f(20000) == pytest.approx(0.3)  # the end of cycle 1 still belongs to it ...
    assert f(20001) == pytest.approx(0.06) and f(10**6) == pytest.approx(0.06)  # ... then a sharp drop
    assert (PLANNING_SCHEDULE.warmup_steps, PLANNING_SCHEDULE.decay_steps) == (1500, 15000)
    assert PLANNING_SCHEDULE(15000) == pytest.approx(0.3) and PLANNING_SCHEDULE(15001) == pytest.approx(0.06)
    with pytest.raises(ValueError, match="warmup_steps"):
        LinearWarmupDecaySchedule(warmup_steps=10, decay_steps=10)


def test_cli_schedule_defaults_follow_the_run_and_are_settable():
    from cosmos_policy_ros.learning.training import _schedule

    assert _schedule(_args("--out", "x", "--data", "d")) == POLICY_SCHEDULE
    assert _schedule(_args("--out", "x", "--data", "d", "--rollouts", "r")) == PLANNING_SCHEDULE
    short = _schedule(_args("--out", "x", "--rollouts", "r", "--warmup-steps", "3", "--decay-steps", "30"))
    assert (short.warmup_steps, short.decay_steps) == (3, 30)
    assert _schedule(_args("--out", "x", "--data", "d", "--lr-schedule", "constant")) is None


def test_trainer_uses_adamw_betas_0_9_0_99_and_the_schedule(demos, latent_cache):
    trainer = make_trainer(demos, latent_cache, batch_size=2, lr=1e-3,
                           schedule=LinearWarmupDecaySchedule(warmup_steps=4, decay_steps=10))
    assert trainer.optimizer.param_groups[0]["betas"] == (0.9, 0.99)
    assert trainer.optimizer.param_groups[0]["weight_decay"] == 0.1
    lrs = [trainer.train_step().lr for _ in range(3)]
    np.testing.assert_allclose(lrs, [1e-3 * (1e-6 + (1 - 1e-6) * k / 4) for k in range(3)])


def test_nonfinite_gradients_are_zeroed_before_clipping(demos, latent_cache):
    trainer = make_trainer(demos, latent_cache, batch_size=2, lr=1e-3)
    params = list(trainer.network.parameters())
    poisoned = params[0]
    poisoned.register_hook(lambda grad: torch.full_like(grad, float("nan")))
    before = [p.detach().clone() for p in params]
    result = trainer.train_step()
    assert result.nonfinite_grads == poisoned.numel()
    assert np.isfinite(result.grad_norm)
    assert all(torch.isfinite(p).all() for p in params)
    assert any(not torch.equal(b, p) for b, p in zip(before[1:], params[1:]))  # the step still happened


def test_gradient_accumulation_equals_one_batch_of_all_micro_batches(demos, latent_cache):
    settings = dict(lr=0.0, weight_decay=0.0, grad_clip=1e9, seed=5)
    accumulated = make_trainer(demos, latent_cache, batch_size=2, grad_accum=2, **settings)
    drawn = []
    original = accumulated.draw_batch
    accumulated.draw_batch = lambda: drawn.append(original()) or drawn[-1]
    result = accumulated.train_step()
    assert len(drawn) == 2 and result.step == 1
    single = make_trainer(demos, latent_cache, batch_size=4, **settings)
    single.draw_batch = lambda: {k: torch.cat([d[k] for d in drawn]) for k in drawn[0]}
    reference = single.train_step()
    assert result.loss == pytest.approx(reference.loss, rel=1e-5)
    for a, b in zip(accumulated.network.parameters(), single.network.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------------------- augmentation
def test_augmented_encodings_are_cached_per_variant_or_encoded_fresh(demos):
    cached = make_trainer(demos, {}, batch_size=3, augment=True, augment_variants=2, seed=1)
    batch = cached.draw_batch()
    assert set(batch["variants"].tolist()) <= {0, 1}
    first = cached.encode([0, 0, 0], [0, 1, -1])
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[0], first[2])
    assert set(cached.latent_cache) == {(0, 0, 0), (0, 0, 1), (0, 0, -1)}
    torch.testing.assert_close(cached.encode([0], [1])[0], first[1])
    # A fresh cache reproduces a variant's pixels exactly (resume gives the same latents).
    again = make_trainer(demos, {}, batch_size=3, augment=True, augment_variants=2, seed=1)
    torch.testing.assert_close(again.encode([0], [1])[0], first[1])
    fresh = make_trainer(demos, {}, batch_size=2, augment=True, seed=1)
    variants = fresh.draw_batch()["variants"]
    assert variants.unique().numel() == 2 and bool((variants >= 0).all())
    fresh.encode([0, 1], variants.tolist())
    assert fresh.latent_cache == {}  # on the fly: nothing cached
