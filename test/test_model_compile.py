"""The GPU speed-ups, checked on CPU with the tiny checkpoint: the compiled denoiser
(parity with eager, no recompile when the batch changes, eager fallback) and the VAE
encode of only the conditioned prefix (same conditions, same samples)."""
import logging

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from cosmos_policy_ros.config import ConfigError, load_config
from cosmos_policy_ros.control.planning import PlanningSettings
from cosmos_policy_ros.model.checkpoint import CosmosCheckpoint, shipped_checkpoint
from cosmos_policy_ros.model.cosmos_policy import CosmosPolicy
from cosmos_policy_ros.model.denoiser import compile_enabled, inductor_cache_dir
from cosmos_policy_ros.types import Observation


@pytest.fixture(scope="module")
def checkpoint():
    return CosmosCheckpoint.from_pretrained(shipped_checkpoint("tiny_cosmos"))


def observation(seed=0):
    rng = np.random.default_rng(seed)
    images = {cam: rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
              for cam in ("cam_high", "cam_left_wrist", "cam_right_wrist")}
    return Observation(stamp_ns=0, images=images, joint_positions=rng.uniform(-0.3, 0.3, 14), task="transfer the cube")


def test_compiled_denoiser_matches_eager_without_recompiling_for_new_batch_sizes(checkpoint):
    eager = CosmosPolicy(checkpoint, compile=False)
    compiled = CosmosPolicy(checkpoint, compile=True)  # inductor, warmed up here
    assert compiled.compile_report["compiled"] is True and compiled.compile_report["seconds"] > 0
    graphs = counters["stats"]["unique_graphs"]
    obs = observation()
    encoded = eager.encode_observation(obs)
    for n in (1, 3, 8):  # the warm-up compiled batch 1 and a dynamic batch >= 2
        want = eager.sample_candidates(encoded, n, seed=4)
        got = compiled.sample_candidates(encoded, n, seed=4)
        np.testing.assert_allclose(np.stack([g.actions for g in got]), np.stack([w.actions for w in want]),
                                   atol=1e-4, rtol=0)
    chunks = np.stack([c.actions for c in eager.sample_candidates(encoded, 2, seed=1)])
    want = eager.predict_outcomes(encoded, chunks, num_future_samples=3, num_value_samples=2, seed=5)
    got = compiled.predict_outcomes(encoded, chunks, num_future_samples=3, num_value_samples=2, seed=5)
    np.testing.assert_allclose(got.values, want.values, atol=1e-4, rtol=0)
    assert counters["stats"]["unique_graphs"] == graphs, "a batch size change recompiled the denoiser"
    assert compiled.denoiser.compiled


def test_compile_failure_falls_back_to_eager_with_a_warning(checkpoint, caplog):
    def broken_backend(graph, example_inputs):
        raise RuntimeError("no C++ compiler on this machine")

    policy = CosmosPolicy(checkpoint, compile=False)
    with caplog.at_level(logging.WARNING):
        assert policy.compile_denoiser(backend=broken_backend) is False
    assert "no C++ compiler" in caplog.text and "running eager" in caplog.text
    assert policy.compile_report["compiled"] is False and "no C++ compiler" in policy.compile_report["error"]
    reference = CosmosPolicy(checkpoint, compile=False)
    obs = observation(1)
    np.testing.assert_array_equal(policy.infer(obs).actions, reference.infer(obs).actions)


def test_run_time_failure_of_the_compiled_network_switches_to_eager(checkpoint, caplog):
    policy = CosmosPolicy(checkpoint, compile=False)
    assert policy.compile_denoiser(backend="eager")  # dynamo only: fast, same numbers
    inputs = policy._example_inputs(2)
    with pytest.raises(RuntimeError):  # bad input fails in eager too: raised, compiled network kept
        policy.denoiser(inputs[0][:, :, :3], *inputs[1:])
    assert policy.denoiser.compiled

    def fails(*args):
        raise RuntimeError("recompilation failed")

    policy.denoiser._forward = fails
    with caplog.at_level(logging.WARNING):
        out = policy.denoiser(*inputs)
    assert "switching to eager" in caplog.text and not policy.denoiser.compiled
    torch.testing.assert_close(out, policy.denoiser.network(*inputs), rtol=0, atol=0)


def test_compile_setting_values_and_inductor_cache(tmp_path, monkeypatch):
    assert compile_enabled("auto", "cuda:0") and not compile_enabled("auto", "cpu")
    assert compile_enabled(True, "cpu") and not compile_enabled("false", "cuda")
    with pytest.raises(ValueError, match="policy.compile.*'maybe'"):
        compile_enabled("maybe", "cpu", where="policy.compile")
    with pytest.raises(ConfigError, match="planning.compile.*'maybe'"):
        load_config("aloha", {"planning.compile": "maybe"})
    assert PlanningSettings.from_config(load_config("aloha", {"planning.compile": False})).compile is False
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("COSMOS_POLICY_ROS_CACHE", str(tmp_path))
    assert inductor_cache_dir() == tmp_path / "inductor"
    import os

    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")


def test_encoding_the_conditioned_prefix_gives_the_same_conditions_and_samples(checkpoint):
    full = CosmosPolicy(checkpoint, compile=False, encode_conditioned_only=False, decode_future_images=False)
    prefix = CosmosPolicy(checkpoint, compile=False, encode_conditioned_only=True, decode_future_images=False)
    assert prefix.conditioned_prefix() == 5  # blank + proprio + 3 cameras: 17 of the 41 raw frames
    obs = observation(2)
    a, b = full.encode_observation(obs), prefix.encode_observation(obs)
    assert b.encoded_frames == 5 and a.encoded_frames == 11
    assert torch.equal(a.latents[:, :, :5], b.latents[:, :, :5])
    assert not b.latents[:, :, 5:].any()  # never read: noise, the injected chunk or sampled frames
    for mode in ("policy", "world_model"):
        cond = full.config.layout.condition_frames(mode)
        cond[full.config.layout.index_of_kind("action")] = False
        assert torch.equal(a.latents[:, :, cond], b.latents[:, :, cond])
    want, got = full.sample_candidates(a, 3, seed=7), prefix.sample_candidates(b, 3, seed=7)
    for w, g in zip(want, got):
        np.testing.assert_array_equal(w.actions, g.actions)
        assert w.predicted_value == g.predicted_value
    chunks = np.stack([w.actions for w in want])
    w_out = full.predict_outcomes(a, chunks, 2, 2, seed=3, decode_future_images=True)
    g_out = prefix.predict_outcomes(b, chunks, 2, 2, seed=3, decode_future_images=True)
    np.testing.assert_array_equal(w_out.values, g_out.values)
    for cam, frames in w_out.future_images.items():  # decoding encodes the full placeholders on demand
        np.testing.assert_array_equal(frames, g_out.future_images[cam])
    prefix.decode_future_images = True  # the policy decodes every chunk: one full encode, no prefix
    assert prefix.encode_observation(obs).encoded_frames == 11
