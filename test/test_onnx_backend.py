"""ONNX Runtime denoiser on the tiny checkpoint: export on first use, parity with torch,
dynamic batch, provider fallback, and the errors for missing, corrupt or stale exports.

One export for the whole module (~20 s of CPU); everything else reuses it.
"""
import json
import shutil

import numpy as np
import pytest
import torch

from cosmos_policy_ros.model import onnx_backend
from cosmos_policy_ros.model.cosmos_policy import CosmosPolicy
from cosmos_policy_ros.model.denoiser import TorchDenoiser
from cosmos_policy_ros.model.tiny import TINY_TASKS
from cosmos_policy_ros.model.onnx_backend import (
    INPUT_NAMES, MODEL_FILE, META_FILE, OnnxDenoiser, OnnxModelError, checkpoint_fingerprint, example_inputs,
    find_or_export, make_onnx_policy, select_providers,
)
from cosmos_policy_ros.control.policies import default_checkpoint, make_cosmos_policy
from cosmos_policy_ros.types import Observation

PARITY = 1e-4
CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A copy of the shipped tiny checkpoint (no onnx/), an empty cache, and the ONNX
    policy built from them, which exports into the cache."""
    torch.set_num_threads(1)  # 2 threads on a shared 2-core machine stall in OpenMP barriers
    root = tmp_path_factory.mktemp("onnx")
    checkpoint = root / "tiny_cosmos"
    shutil.copytree(default_checkpoint(), checkpoint, ignore=shutil.ignore_patterns(onnx_backend.ONNX_SUBDIR))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COSMOS_POLICY_ROS_CACHE", str(root / "cache"))
        logs: list[str] = []
        policy = make_onnx_policy(checkpoint, seed=0, intra_op_threads=1, device="cpu",
                                  decode_future_images=False, log=logs.append)
        torch_policy = CosmosPolicy.from_pretrained(checkpoint, device="cpu", seed=0, decode_future_images=False)
        yield {"root": root, "checkpoint": checkpoint, "policy": policy, "torch_policy": torch_policy, "logs": logs,
               "export_dir": policy.denoiser.path.parent}


def make_obs(seed=0):
    rng = np.random.default_rng(seed)
    images = {cam: rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for cam in CAMERAS}
    return Observation(stamp_ns=5, images=images, joint_positions=rng.uniform(-0.3, 0.3, 14), task=TINY_TASKS[0])


def test_first_use_exports_into_cache_with_metadata(env):
    export_dir = env["export_dir"]
    assert export_dir.parent.parent == env["root"] / "cache"
    assert any("exporting once into" in line for line in env["logs"])
    assert any("CPUExecutionProvider" in line for line in env["logs"])
    meta = json.loads((export_dir / META_FILE).read_text())
    assert meta["inputs"]["noisy_latents"]["shape"] == ["batch", 16, 11, 8, 8]
    assert meta["inputs"]["text_embedding"]["shape"][0] == "batch"
    assert meta["source_checkpoint"]["fingerprint"] == checkpoint_fingerprint(env["checkpoint"])
    assert meta["max_abs_diff_vs_torch"] <= PARITY
    assert meta["external_data_file"] is None  # 0.9 MB of weights; > 2 GB goes to denoiser.onnx.data
    # A second policy finds the cached export instead of exporting again.
    logs: list[str] = []
    assert find_or_export(env["checkpoint"], log=logs.append) == export_dir
    assert not any("exporting" in line for line in logs)


def test_onnx_chunk_matches_torch_chunk_from_same_seed(env):
    onnx_policy, torch_policy = env["policy"], env["torch_policy"]
    obs = make_obs(1)
    encoded = torch_policy.encode_observation(obs)
    cond = torch_policy.config.layout.condition_frames("policy")
    noise = torch.from_numpy(np.random.RandomState(3).standard_normal(tuple(encoded.latents.shape)).astype(np.float32))
    steps = torch_policy.config.num_steps["policy"]
    samples = [
        p.sampler.sample(p.denoiser, encoded.latents, cond, encoded.text_embedding, steps, noise)
        for p in (torch_policy, onnx_policy)
    ]
    latent_diff = float((samples[0] - samples[1]).abs().max())
    assert latent_diff <= PARITY, latent_diff
    chunk_diff = float(np.max(np.abs(torch_policy.infer(obs).actions - onnx_policy.infer(obs).actions)))
    assert chunk_diff <= PARITY, chunk_diff


@pytest.mark.parametrize("batch", [1, 8])
def test_dynamic_batch(env, batch):
    onnx_policy, torch_policy = env["policy"], env["torch_policy"]
    shapes = {name: spec["shape"] for name, spec in onnx_policy.denoiser.metadata["inputs"].items()}
    inputs = example_inputs(shapes, batch=batch, seed=batch)
    expected = torch_policy.denoiser(*inputs)
    got = onnx_policy.denoiser(*inputs)
    assert got.shape == expected.shape == (batch, 16, 11, 8, 8)
    assert float((got - expected).abs().max()) <= PARITY
    encoded = torch_policy.encode_observation(make_obs(2))
    ours = onnx_policy.sample_candidates(encoded, num_candidates=batch, seed=4)
    theirs = torch_policy.sample_candidates(encoded, num_candidates=batch, seed=4)
    assert len(ours) == batch
    assert max(float(np.max(np.abs(a.actions - b.actions))) for a, b in zip(ours, theirs)) <= PARITY


def test_provider_selection_falls_back_to_cpu(env):
    cpu_only = ["AzureExecutionProvider", "CPUExecutionProvider"]
    assert select_providers(available=cpu_only) == ["CPUExecutionProvider"]
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert select_providers(available=gpu) == gpu
    assert select_providers(["CUDAExecutionProvider"], available=gpu) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    logs: list[str] = []
    denoiser = OnnxDenoiser(env["export_dir"], providers=onnx_backend.PROVIDER_PREFERENCE, log=logs.append)
    assert denoiser.provider == "CPUExecutionProvider"  # the CPU wheel here; TensorRT/CUDA are skipped
    assert "on CPUExecutionProvider" in logs[0]


def test_missing_and_corrupt_files_fail_with_the_path(env, tmp_path):
    with pytest.raises(OnnxModelError, match="not found.*export-onnx"):
        OnnxDenoiser(tmp_path / "nowhere.onnx", log=lambda m: None)
    garbage = tmp_path / "garbage" / MODEL_FILE
    garbage.parent.mkdir()
    garbage.write_bytes(b"\x00not an onnx model\xff" * 64)
    with pytest.raises(OnnxModelError, match="corrupt or incomplete"):
        OnnxDenoiser(garbage, log=lambda m: None)
    truncated = tmp_path / "truncated" / MODEL_FILE
    truncated.parent.mkdir()
    truncated.write_bytes((env["export_dir"] / MODEL_FILE).read_bytes()[:50_000])
    with pytest.raises(OnnxModelError, match=str(truncated)):
        OnnxDenoiser(truncated, log=lambda m: None)
    denoiser = OnnxDenoiser(env["export_dir"], log=lambda m: None)
    wrong = example_inputs({name: spec["shape"] for name, spec in denoiser.metadata["inputs"].items()}, batch=1)
    with pytest.raises(ValueError, match="noisy_latents has shape"):
        denoiser(wrong[0][:, :, :5], *wrong[1:])


def test_checkpoint_onnx_folder_is_used_and_a_stale_one_refused(env, tmp_path):
    checkpoint = tmp_path / "with_onnx"
    shutil.copytree(env["checkpoint"], checkpoint)
    shipped = checkpoint / onnx_backend.ONNX_SUBDIR
    shutil.copytree(env["export_dir"], shipped)
    logs: list[str] = []
    assert find_or_export(checkpoint, log=logs.append) == shipped and not logs
    meta = json.loads((shipped / META_FILE).read_text())
    meta["source_checkpoint"]["fingerprint"] = "0" * 64
    (shipped / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(OnnxModelError, match="exported from other weights.*export-onnx"):
        find_or_export(checkpoint, log=logs.append)
    (shipped / META_FILE).write_text("{")
    with pytest.raises(OnnxModelError, match="not valid JSON"):
        find_or_export(checkpoint, log=logs.append)


def test_config_backend_onnx_builds_an_onnx_policy(env, monkeypatch):
    monkeypatch.setenv("COSMOS_POLICY_ROS_CACHE", str(env["root"] / "cache"))  # the export made above
    policy = make_cosmos_policy(str(env["checkpoint"]), "onnx", seed=3)
    assert isinstance(policy.denoiser, OnnxDenoiser) and policy.seed == 3
    assert not isinstance(policy.denoiser, TorchDenoiser)


def test_export_cli_arguments(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    onnx_backend.add_export_onnx_arguments(parser)
    args = parser.parse_args([str(tmp_path)])
    assert args.out == "" and args.opset == onnx_backend.DEFAULT_OPSET and args.external_data == "auto"
    assert onnx_backend.run_export_onnx(parser.parse_args([str(tmp_path / "missing"), str(tmp_path / "out")])) == 1
    assert set(INPUT_NAMES) == {"noisy_latents", "sigma", "condition_frames", "text_embedding"}


def test_a_learnable_position_embedding_keeps_its_numbers_and_exports(tmp_path):
    """The embedded recipe's transformer has the learnable (t, h, w) position embedding;
    diffusers' forward of it cannot be exported with a dynamic batch. The denoiser's
    trace-friendly forward gives bit-identical embeddings and the export keeps parity."""
    from dataclasses import replace

    from diffusers import CosmosTransformer3DModel
    from diffusers.models.transformers.transformer_cosmos import CosmosLearnablePositionalEmbed

    from cosmos_policy_ros.learning.embedded_model import init_position_embedding
    from cosmos_policy_ros.model.denoiser import DenoiserNetwork
    from cosmos_policy_ros.model.tiny import TINY_TRANSFORMER_CONFIG, make_tiny_checkpoint

    torch.manual_seed(0)
    transformer = CosmosTransformer3DModel(**dict(TINY_TRANSFORMER_CONFIG, extra_pos_embed_type="learnable")).eval()
    init_position_embedding(transformer)
    embed = transformer.learnable_pos_embed
    hidden = torch.randn(3, 17, 11, 8, 8)
    original = CosmosLearnablePositionalEmbed.forward(embed, hidden)
    DenoiserNetwork(transformer)  # installs the trace-friendly forward on this instance
    assert torch.equal(embed(hidden), original) and original.abs().sum() > 0
    checkpoint = replace(make_tiny_checkpoint(0), transformer=transformer)
    checkpoint.save_pretrained(tmp_path / "checkpoint")
    onnx_backend.export_onnx(tmp_path / "checkpoint", tmp_path / "onnx", log=lambda _: None)
    meta = json.loads((tmp_path / "onnx" / META_FILE).read_text())
    assert meta["max_abs_diff_vs_torch"] <= PARITY
