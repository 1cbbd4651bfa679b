"""Averaging fine-tunes of one checkpoint: the mean weights, a loadable folder, clear refusals."""
import json
import subprocess
from dataclasses import replace
import sys

import pytest
import torch

from cosmos_policy_ros.learning.checkpoint_average import PROVENANCE_FILE, average_checkpoints
from cosmos_policy_ros.model.checkpoint import CheckpointError, CosmosCheckpoint
from cosmos_policy_ros.model.tiny import make_tiny_checkpoint


def _fine_tune(tmp_path, name, shift):
    """A tiny checkpoint whose transformer weights moved by ``shift`` (a stand-in for a fine-tune)."""
    checkpoint = make_tiny_checkpoint(0)
    with torch.no_grad():
        for p in checkpoint.transformer.parameters():
            p.add_(shift)
    checkpoint.save_pretrained(tmp_path / name)
    return tmp_path / name


def test_the_average_holds_the_mean_transformer_weights_and_loads(tmp_path):
    a, b, c = (_fine_tune(tmp_path, n, s) for n, s in (("a", 0.0), ("b", 0.3), ("c", -0.6)))
    out = average_checkpoints([a, b, c], tmp_path / "soup", progress=lambda _: None)
    soup = CosmosCheckpoint.from_pretrained(out)
    parts = [CosmosCheckpoint.from_pretrained(f).transformer.state_dict() for f in (a, b, c)]
    for key, value in soup.transformer.state_dict().items():
        torch.testing.assert_close(value, (parts[0][key] + parts[1][key] + parts[2][key]) / 3)
    base = CosmosCheckpoint.from_pretrained(a)
    assert soup.config.to_dict() == base.config.to_dict()
    assert soup.stats.to_json_dict() == base.stats.to_json_dict()
    for key, value in soup.vae.state_dict().items():
        assert torch.equal(value, base.vae.state_dict()[key])
    assert json.loads((out / PROVENANCE_FILE).read_text())["averaged"] == [str(a), str(b), str(c)]


def test_checkpoints_that_read_latents_differently_are_refused_naming_both(tmp_path):
    a = _fine_tune(tmp_path, "a", 0.0)
    other_stats = make_tiny_checkpoint(0)
    other_stats.stats = replace(other_stats.stats, actions_max=other_stats.stats.actions_max + 1.0)
    other_stats.save_pretrained(tmp_path / "stats")
    with pytest.raises(CheckpointError, match=r"a and .*stats: normalization statistics"):
        average_checkpoints([a, tmp_path / "stats"], tmp_path / "out1", progress=lambda _: None)
    make_tiny_checkpoint(1).save_pretrained(tmp_path / "seed1")  # another VAE
    with pytest.raises(CheckpointError, match="VAE weights"):
        average_checkpoints([a, tmp_path / "seed1"], tmp_path / "out2", progress=lambda _: None)
    with pytest.raises(CheckpointError, match="at least 2"):
        average_checkpoints([a], tmp_path / "out3", progress=lambda _: None)
    with pytest.raises(CheckpointError, match="one of the inputs"):
        average_checkpoints([a, _fine_tune(tmp_path, "b", 0.1)], a, progress=lambda _: None)
    assert not (tmp_path / "out1").exists() and not (tmp_path / "out2").exists()


def test_cli_writes_the_average_and_reports_a_refusal(tmp_path):
    a, b = _fine_tune(tmp_path, "a", 0.0), _fine_tune(tmp_path, "b", 0.2)
    ok = subprocess.run([sys.executable, "-m", "cosmos_policy_ros.cli", "average-checkpoints", str(a), str(b),
                         "--out", str(tmp_path / "soup")], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "averaged over 2 checkpoints" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "cosmos_policy_ros.cli", "average-checkpoints", str(a),
                          "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "at least 2" in bad.stderr
