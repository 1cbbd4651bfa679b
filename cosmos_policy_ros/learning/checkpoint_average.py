"""Average the denoiser weights of checkpoints fine-tuned from one start ("model soup").

Several fine-tunes of one checkpoint (other learning rates, data or seeds) end in the same
basin; the mean of their transformer weights is often a better policy than any one of them,
at no inference cost. Everything else in a checkpoint folder (policy config, layout,
normalization statistics, VAE, T5 embeddings) must be identical across the inputs, or the
average would mix models that read their latents differently: a mismatch is refused,
naming the two folders and what differs.

    cosmos-policy-ros average-checkpoints --out SOUP RUN_A RUN_B RUN_C

The output is a normal checkpoint folder (the first input's files, the averaged
transformer) plus ``checkpoint_average.json`` naming its sources.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from cosmos_policy_ros.model.checkpoint import CheckpointError, CosmosCheckpoint

PROVENANCE_FILE = "checkpoint_average.json"


def _same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> str:
    """'' when equal, else the first differing key."""
    if a.keys() != b.keys():
        return f"keys {sorted(set(a) ^ set(b))[:3]}"
    for key in a:
        if a[key].shape != b[key].shape or not torch.equal(a[key], b[key]):
            return key
    return ""


def _check_compatible(first: CosmosCheckpoint, other: CosmosCheckpoint, first_name: str, other_name: str) -> None:
    def refuse(what: str) -> None:
        raise CheckpointError(f"cannot average {first_name} and {other_name}: {what} differ(s); average only "
                              "fine-tunes of one checkpoint that keep its config, statistics, VAE and tasks")

    if first.config.to_dict() != other.config.to_dict():
        keys = [k for k, v in first.config.to_dict().items() if other.config.to_dict().get(k) != v]
        refuse(f"cosmos_policy.json fields {keys}")
    if dict(first.transformer.config) != dict(other.transformer.config):
        keys = [k for k, v in first.transformer.config.items() if other.transformer.config.get(k) != v]
        refuse(f"transformer config fields {keys}")
    if first.stats.to_json_dict() != other.stats.to_json_dict():
        refuse("normalization statistics (dataset_statistics.json)")
    if (first.vae is None) != (other.vae is None):
        refuse("VAE presence")
    if first.vae is not None:
        differing = _same_tensors(first.vae.state_dict(), other.vae.state_dict())
        if differing:
            refuse(f"VAE weights ({differing})")
    differing = _same_tensors(first.text_embeddings, other.text_embeddings)
    if differing:
        refuse(f"T5 task embeddings ({differing})")


def average_checkpoints(folders: list[str | Path], out: str | Path, progress=print) -> Path:
    """Write the checkpoint whose transformer weights are the mean of ``folders``' to ``out``."""
    folders = [Path(f) for f in folders]
    out = Path(out)
    if len(folders) < 2:
        raise CheckpointError(f"averaging needs at least 2 checkpoints, got {len(folders)}")
    if len({f.resolve() for f in folders}) != len(folders):
        raise CheckpointError(f"a checkpoint is listed twice in {[str(f) for f in folders]}")
    if any(out.resolve() == f.resolve() for f in folders):
        raise CheckpointError(f"--out {out} is one of the inputs; write the average elsewhere")
    base = CosmosCheckpoint.from_pretrained(folders[0], device="cpu", dtype=torch.float32)
    total = {k: v.detach().clone().double() if v.is_floating_point() else v.detach().clone()
             for k, v in base.transformer.state_dict().items()}
    for folder in folders[1:]:
        other = CosmosCheckpoint.from_pretrained(folder, device="cpu", dtype=torch.float32)
        _check_compatible(base, other, str(folders[0]), str(folder))
        for key, value in other.transformer.state_dict().items():
            if value.is_floating_point():
                total[key] += value.double()
            elif not torch.equal(total[key], value):
                raise CheckpointError(f"cannot average {folders[0]} and {folder}: integer buffer {key} differs")
        progress(f"[average-checkpoints] added {folder}")
    averaged = {k: (v / len(folders)).float() if v.is_floating_point() else v for k, v in total.items()}
    base.transformer.load_state_dict(averaged)
    base.save_pretrained(out)
    (out / PROVENANCE_FILE).write_text(json.dumps({"averaged": [str(f) for f in folders],
                                                   "weights": "transformer, arithmetic mean"}, indent=2))
    progress(f"[average-checkpoints] wrote {out}: transformer weights averaged over {len(folders)} checkpoints")
    return out


def add_average_checkpoints_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT",
                        help="checkpoint folders fine-tuned from one start (same config, statistics, VAE, tasks)")
    parser.add_argument("--out", required=True, help="checkpoint folder to write")


def run_average_checkpoints(args: argparse.Namespace) -> int:
    try:
        average_checkpoints(args.checkpoints, args.out)
    except (CheckpointError, FileNotFoundError) as err:
        print(f"[average-checkpoints] error: {err}", file=sys.stderr)
        return 2
    return 0
