"""A tiny, deterministic, randomly initialised Cosmos Policy checkpoint for tests, the
simulator loop and benchmarks on CPU. Same layout, pipeline and file format as the
real ALOHA checkpoint; only the sizes are small (64 x 64 images -> 8 x 8 latents, a
2-layer transformer, a narrow Wan VAE, a 32-wide T5 table). It does not do the task.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from .checkpoint import (
    ALOHA_JOINT_NAMES,
    PREDICT2_2B_TRANSFORMER_CONFIG,
    CosmosCheckpoint,
    PolicyConfig,
)
from .layout import aloha_layout
from .normalization import NormalizationStats
from .sampler import SamplerConfig

TINY_TASKS = (
    "transfer the cube",
    "insert the peg into the socket",
    "fold the shirt",
)

# The 2B architecture (same channels, patching, RoPE, padding mask), shrunk.
TINY_TRANSFORMER_CONFIG = dict(
    PREDICT2_2B_TRANSFORMER_CONFIG,
    num_attention_heads=2,
    attention_head_dim=16,
    num_layers=2,
    mlp_ratio=2.0,
    text_embed_dim=32,
    adaln_lora_dim=8,
)

TINY_VAE_CONFIG = dict(base_dim=4, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1)


def tiny_stats() -> NormalizationStats:
    """Plausible ALOHA ranges: arm joints in radians, grippers normalized 0..1."""
    arm_lo = np.array([-1.2, -1.0, -0.8, -1.5, -1.2, -1.8])
    arm_hi = np.array([1.2, 0.8, 1.2, 1.5, 1.6, 1.8])
    lo = np.concatenate([arm_lo, [0.0], arm_lo, [0.0]])
    hi = np.concatenate([arm_hi, [1.0], arm_hi, [1.0]])
    return NormalizationStats(actions_min=lo, actions_max=hi, proprio_min=lo.copy(), proprio_max=hi.copy())


def make_tiny_checkpoint(seed: int = 0, planning: bool = False) -> CosmosCheckpoint:
    """Build the tiny checkpoint in memory (deterministic for a seed)."""
    from diffusers import AutoencoderKLWan, CosmosTransformer3DModel

    torch.manual_seed(seed)
    transformer = CosmosTransformer3DModel(**TINY_TRANSFORMER_CONFIG).eval()
    # diffusers zero-initialises nothing here, but make every weight non-trivial and seeded.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in transformer.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.05 + (1.0 if param.ndim == 1 else 0.0))
    vae = AutoencoderKLWan(**TINY_VAE_CONFIG).eval()
    config = PolicyConfig(
        robot="aloha",
        joint_names=ALOHA_JOINT_NAMES,
        chunk_size=50,
        control_rate_hz=25.0,
        layout=aloha_layout(value_from_future_state_only=planning),
        sampler=SamplerConfig(sigma_min=4.0, sigma_max=80.0, rho=7.0, sigma_conditional=0.0),
        num_steps={"policy": 10, "world_model": 5, "value": 5},
        image_size=64,
        center_crop_area=0.9,
        jpeg_quality=None,
        vae={"subfolder": "vae"},
        default_task=TINY_TASKS[0],
    )
    text_gen = torch.Generator().manual_seed(seed + 1)
    table = {task: torch.randn(8, TINY_TRANSFORMER_CONFIG["text_embed_dim"], generator=text_gen) for task in TINY_TASKS}
    checkpoint = CosmosCheckpoint(config=config, transformer=transformer, vae=vae, stats=tiny_stats(), text_embeddings=table)
    checkpoint.validate("tiny")
    return checkpoint


def build_tiny_checkpoint(out_dir: str | Path, seed: int = 0, planning: bool = False) -> Path:
    """Write the tiny checkpoint folder and return its path."""
    out_dir = Path(out_dir)
    make_tiny_checkpoint(seed, planning).save_pretrained(out_dir)
    return out_dir


def add_tiny_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", help="checkpoint folder to write")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument(
        "--planning", action="store_true", help="planning-model layout (value mode conditions on s' only)"
    )


def run_tiny(args: argparse.Namespace) -> int:
    path = build_tiny_checkpoint(args.out_dir, seed=args.seed, planning=args.planning)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    print(f"wrote tiny Cosmos Policy checkpoint to {path} ({size / 1024:.0f} KiB)")
    return 0
