"""Cosmos Policy model core: latent layout, normalization, sampler, denoiser backends,
checkpoint folder, conversion from the official checkpoints and the ``Policy``.

Entry points:

- ``CosmosPolicy.from_pretrained(folder)``: the ``Policy`` (``infer`` / ``reset``) plus
  ``encode_observation``, ``sample_candidates``, ``predict_outcomes`` for planning.
- ``Denoiser`` / ``TorchDenoiser`` / ``DenoiserNetwork``: the backend interface.
- ``convert_checkpoint`` / ``build_tiny_checkpoint`` (+ ``add_*_arguments`` / ``run_*``
  for the ``convert-checkpoint`` and ``make-tiny-checkpoint`` CLI subcommands).

Imports are lazy so that ``import cosmos_policy_ros.model`` does not pull in diffusers.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CosmosPolicy": "cosmos_policy",
    "EncodedObservation": "cosmos_policy",
    "OutcomePrediction": "cosmos_policy",
    "CosmosCheckpoint": "checkpoint",
    "PolicyConfig": "checkpoint",
    "CheckpointError": "checkpoint",
    "Denoiser": "denoiser",
    "TorchDenoiser": "denoiser",
    "DenoiserNetwork": "denoiser",
    "MultistepSampler": "sampler",
    "SamplerConfig": "sampler",
    "LatentLayout": "layout",
    "LatentSlot": "layout",
    "aloha_layout": "layout",
    "NormalizationStats": "normalization",
    "convert_checkpoint": "convert",
    "add_convert_arguments": "convert",
    "run_convert": "convert",
    "build_tiny_checkpoint": "tiny",
    "add_tiny_arguments": "tiny",
    "run_tiny": "tiny",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
