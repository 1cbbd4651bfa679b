"""Packed datasets (`pack-dataset`): the same samples as the episode folders, one small
file, bound to the checkpoint's preprocessing; `train --packed` trains on it."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from test_training import REPO, write_folder

from cosmos_policy_ros.learning.packed_dataset import PackedDataset, pack_dataset
from cosmos_policy_ros.learning.training import add_train_arguments, run_train
from cosmos_policy_ros.learning.training_data import EpisodeDataset, TrainingDataError
from cosmos_policy_ros.model.tiny import build_tiny_checkpoint, make_tiny_checkpoint


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("packed")
    demos = write_folder(root / "demos", episodes=2, steps=9)
    rollouts = write_folder(root / "rollouts", episodes=2, steps=7, success=False, seed=10)
    stats = {"actions_min": [-1.0] * 14, "actions_max": [1.0] * 14, "proprio_min": [-1.0] * 14,
             "proprio_max": [1.0] * 14}
    (demos / "dataset_statistics.json").write_text(json.dumps(stats))
    return demos, rollouts


def _same(a, b):
    assert np.array_equal(a.joint_positions, b.joint_positions) and np.array_equal(a.actions, b.actions)
    assert np.array_equal(a.future_joint_positions, b.future_joint_positions)
    assert (a.value, a.task, a.source) == (b.value, b.task, b.source)
    for cam in a.images:
        assert np.array_equal(a.images[cam], b.images[cam]) and np.array_equal(a.future_images[cam], b.future_images[cam])


def test_a_pack_serves_exactly_the_samples_of_its_episode_folders(tmp_path, folders):
    demos, rollouts = folders
    config = make_tiny_checkpoint(0).config
    summary = pack_dataset(config, tmp_path / "p.npz", [demos], [rollouts], progress=lambda _: None)
    assert summary["episodes"] == 4 and summary["samples"] == 2 * 9 + 2 * 7
    source = EpisodeDataset(config, [demos], [rollouts])
    packed = PackedDataset(config, tmp_path / "p.npz")
    assert len(packed) == len(source) and packed.tasks == source.tasks
    assert [e.success for e in packed.episodes] == [e.success for e in source.episodes]
    for pool in ("demo", "success", "failure"):
        from cosmos_policy_ros.learning.training_data import DataMix

        mix = DataMix.official(True, True)
        assert np.array_equal(packed.pools(mix)[pool], source.pools(mix)[pool])
    for i in range(len(source)):
        _same(source.sample(i), packed.sample(i))
        _same(source.sample(i, center_crop=False), packed.sample(i, center_crop=False))
    assert packed.statistics == json.loads((demos / "dataset_statistics.json").read_text())


def test_a_pack_for_other_preprocessing_or_without_uncropped_frames_is_refused_clearly(tmp_path, folders):
    demos, _ = folders
    config = make_tiny_checkpoint(0).config
    pack_dataset(config, tmp_path / "crop.npz", [demos], progress=lambda _: None, uncropped=False)
    packed = PackedDataset(config, tmp_path / "crop.npz")
    packed.sample(0)  # the center-cropped frames are there
    with pytest.raises(TrainingDataError, match="--no-augment"):
        packed.sample(0, center_crop=False)
    other = replace(config, image_size=2 * config.image_size)
    with pytest.raises(TrainingDataError, match=rf"image_size: pack {config.image_size} vs checkpoint {other.image_size}"):
        PackedDataset(other, tmp_path / "crop.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(TrainingDataError, match="not a packed dataset"):
        PackedDataset(config, tmp_path / "junk.npz")
    with pytest.raises(TrainingDataError, match="not found"):
        PackedDataset(config, tmp_path / "missing.npz")


def _pack_cli(checkpoint, demos, pack) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", "cosmos_policy_ros.cli", "pack-dataset", "--checkpoint", str(checkpoint),
                          "--data", str(demos), "--cropped-only", "--out", str(pack)],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr
    return run


def test_cli_packs_and_trains_on_the_pack_with_its_statistics(tmp_path, folders):
    demos, _ = folders
    tiny = build_tiny_checkpoint(tmp_path / "tiny", seed=0)
    pack = tmp_path / "demos.npz"
    run = _pack_cli(tiny, demos, pack)
    assert "2 episodes, 18 samples" in run.stdout
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    out = tmp_path / "out"
    common = ["--checkpoint", str(tiny), "--out", str(out), "--batch-size", "2", "--steps", "2", "--device", "cpu",
              "--no-augment", "--stats", "dataset"]
    assert run_train(parser.parse_args([*common, "--packed", str(pack)])) == 0
    saved = json.loads((out / "dataset_statistics.json").read_text())
    assert saved["actions_max"] == [1.0] * 14
    assert run_train(parser.parse_args([*common, "--packed", str(pack), "--data", str(demos)])) == 2


def _run_gpu_script(tmp_path, variants: str, out: str) -> subprocess.CompletedProcess:
    """scripts/gpu_train_packed.sh on the CPU, with this interpreter first on PATH."""
    env = dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", VARIANTS=variants,
               GPU_DIR=str(tmp_path / "gpu"), BUDGET="8", DEVICE="cpu", BATCH="2", OUT=str(tmp_path / out),
               WORK=str(tmp_path / f"{out}_work"), OMP_NUM_THREADS="1")
    return subprocess.run(["bash", "scripts/gpu_train_packed.sh"], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=300)


def test_gpu_script_fine_tunes_a_checkpoint_folder_from_a_pack_and_refuses_an_unknown_start(tmp_path, folders):
    """The GPU stage's script (run on lent GPU hosts only) on the CPU: a folder start needs no
    fresh start checkpoints (nor the VAE and statistics they are built from), the run comes
    back as tar parts that unpack to a trained checkpoint; a start that is neither a folder
    nor a known size stops it with a message naming it."""
    import tarfile

    from safetensors.torch import load_file

    demos, _ = folders
    tiny = build_tiny_checkpoint(tmp_path / "tiny", seed=0)
    (tmp_path / "gpu").mkdir()
    _pack_cli(tiny, demos, tmp_path / "gpu" / "demos.npz")

    run = _run_gpu_script(tmp_path, f"T:{tiny}:demos.npz:1e-3", "out")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "initial checkpoints written: none needed" in run.stdout
    parts = sorted((tmp_path / "out").glob("T.tar.part_*"))
    assert parts, run.stdout[-2000:]
    joined = tmp_path / "T.tar"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(joined) as tar:
        tar.extractall(tmp_path / "back", filter="data")
    back = tmp_path / "back" / "T"
    assert (back / "cosmos_policy.json").is_file() and not (back / "vae").exists()
    start = load_file(next((tiny / "transformer").glob("*.safetensors")))
    trained = load_file(next((back / "transformer").glob("*.safetensors")))
    assert start.keys() == trained.keys()
    assert any(not (start[k] == trained[k]).all() for k in start), "the run did not change any weight"

    bad = _run_gpu_script(tmp_path, "T:no_such_start:demos.npz", "out_bad")
    assert bad.returncode != 0
    assert "unknown start ['no_such_start']" in bad.stdout + bad.stderr
