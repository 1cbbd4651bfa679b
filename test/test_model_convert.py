"""Converter: native Cosmos-Predict2 names -> diffusers, same outputs as diffusers' own
single-file conversion, .pt / wrapped / distributed-checkpoint inputs, clear refusals."""
import json
import pickle

import pytest
import torch
from diffusers import CosmosTransformer3DModel
from diffusers.loaders.single_file_utils import convert_cosmos_transformer_checkpoint_to_diffusers

from cosmos_policy_ros.model.checkpoint import CosmosCheckpoint
from cosmos_policy_ros.model.convert import (
    ConversionError,
    convert_checkpoint,
    convert_transformer,
    load_native_state_dict,
    load_t5_pickle,
)
from cosmos_policy_ros.model.denoiser import DenoiserNetwork
from cosmos_policy_ros.model.tiny import TINY_TRANSFORMER_CONFIG, tiny_stats

CFG = TINY_TRANSFORMER_CONFIG


def native_state_dict(cfg=CFG, prefix="net.", seed=0):
    """Weights under the native MiniTrainDIT module names (written from its module tree)."""
    hidden = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    head, text, lora = cfg["attention_head_dim"], cfg["text_embed_dim"], cfg["adaln_lora_dim"]
    mlp = int(hidden * cfg["mlp_ratio"])
    patch_in = (cfg["in_channels"] + 1) * 4
    shapes = {
        "x_embedder.proj.1.weight": (hidden, patch_in),
        "t_embedder.1.linear_1.weight": (hidden, hidden),
        "t_embedder.1.linear_2.weight": (3 * hidden, hidden),
        "t_embedding_norm.weight": (hidden,),
        "final_layer.linear.weight": (4 * cfg["out_channels"], hidden),
        "final_layer.adaln_modulation.1.weight": (lora, hidden),
        "final_layer.adaln_modulation.2.weight": (2 * hidden, lora),
    }
    for n in range(cfg["num_layers"]):
        b = f"blocks.{n}."
        for attn, kv_in in (("self_attn", hidden), ("cross_attn", text)):
            shapes[b + f"{attn}.q_proj.weight"] = (hidden, hidden)
            shapes[b + f"{attn}.k_proj.weight"] = (hidden, kv_in)
            shapes[b + f"{attn}.v_proj.weight"] = (hidden, kv_in)
            shapes[b + f"{attn}.output_proj.weight"] = (hidden, hidden)
            shapes[b + f"{attn}.q_norm.weight"] = (head,)
            shapes[b + f"{attn}.k_norm.weight"] = (head,)
        shapes[b + "mlp.layer1.weight"] = (mlp, hidden)
        shapes[b + "mlp.layer2.weight"] = (hidden, mlp)
        for mod in ("self_attn", "cross_attn", "mlp"):
            shapes[b + f"adaln_modulation_{mod}.1.weight"] = (lora, hidden)
            shapes[b + f"adaln_modulation_{mod}.2.weight"] = (3 * hidden, lora)
    gen = torch.Generator().manual_seed(seed)
    state = {prefix + k: torch.randn(s, generator=gen) * 0.05 + (1.0 if len(s) == 1 else 0.0) for k, s in shapes.items()}
    # buffers and bookkeeping the native checkpoints carry, without weights
    state[prefix + "pos_embedder.seq"] = torch.arange(128.0)
    state[prefix + "pos_embedder.dim_spatial_range"] = torch.arange(4.0)
    state[prefix + "pos_embedder.dim_temporal_range"] = torch.arange(4.0)
    state[prefix + "accum_video_sample_counter"] = torch.tensor(3)
    state[prefix + "blocks.0.self_attn._extra_state"] = torch.zeros(1)
    return state


def run_network(model, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 16, 3, 4, 4, generator=gen)
    sigma = torch.tensor([[0.0, 5.0, 5.0], [0.0, 20.0, 20.0]])
    cond = torch.tensor([[1.0, 0.0, 0.0]] * 2)
    text = torch.randn(2, 5, CFG["text_embed_dim"], generator=gen)
    with torch.no_grad():
        return DenoiserNetwork(model)(x, sigma, cond, text)


def test_native_names_map_with_no_missing_or_unexpected_keys_and_same_outputs():
    native = native_state_dict()
    native.update({k.replace("net.", "net_ema.", 1): v * 2 for k, v in native_state_dict().items()})
    model, report = convert_transformer(native, CFG, dtype=torch.float32, progress=False)
    assert report.missing == [] and report.unmapped == [] and report.shape_mismatches == []
    assert report.mapped == len(model.state_dict())
    assert sorted(report.dropped) == sorted(
        ["pos_embedder.seq", "pos_embedder.dim_spatial_range", "pos_embedder.dim_temporal_range",
         "accum_video_sample_counter", "blocks.0.self_attn._extra_state"]
    )
    # reference: diffusers' own Cosmos single-file conversion of the same weights
    reference = CosmosTransformer3DModel(**CFG).eval()
    ref_state = convert_cosmos_transformer_checkpoint_to_diffusers(native_state_dict())
    missing, unexpected = reference.load_state_dict(ref_state, strict=False)
    assert missing == [] and unexpected == []
    torch.testing.assert_close(run_network(model), run_network(reference), rtol=0, atol=0)
    ema, _ = convert_transformer(native, CFG, use_ema=True, dtype=torch.float32, progress=False)
    assert torch.equal(ema.proj_out.weight, 2 * model.proj_out.weight)


def test_shape_mismatch_and_unmapped_keys_are_refused():
    native = native_state_dict()
    native["net.blocks.1.mlp.layer1.weight"] = torch.zeros(3, 3)
    with pytest.raises(ConversionError, match=r"shape mismatch: blocks.1.mlp.layer1.weight"):
        convert_transformer(native, CFG, progress=False)
    native = native_state_dict()
    native["net.some_new_head.weight"] = torch.zeros(2)
    del native["net.final_layer.linear.weight"]
    with pytest.raises(ConversionError) as info:
        convert_transformer(native, CFG, progress=False)
    assert "unmapped source key: some_new_head.weight" in str(info.value)
    assert "missing model weight: proj_out.weight" in str(info.value)


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_pt_wrapped_and_distributed_checkpoint_inputs(tmp_path):
    import torch.distributed.checkpoint as dcp

    native = native_state_dict()
    torch.save({"model": native, "iteration": 5}, tmp_path / "model.pt")
    assert load_native_state_dict(tmp_path / "model.pt").keys() == native.keys()
    dcp.save(native, checkpoint_id=str(tmp_path / "dcp" / "model"))
    loaded = load_native_state_dict(tmp_path / "dcp")
    assert loaded.keys() == native.keys()
    assert torch.equal(loaded["net.final_layer.linear.weight"], native["net.final_layer.linear.weight"])
    torch.save({"optimizer": {"lr": 1.0}}, tmp_path / "bad.pt")
    with pytest.raises(ConversionError, match="net_ema"):
        load_native_state_dict(tmp_path / "bad.pt")


def test_convert_checkpoint_writes_a_loadable_folder(tmp_path):
    torch.save(native_state_dict(), tmp_path / "model.pt")
    tiny_stats().save(tmp_path / "stats.json")
    with open(tmp_path / "t5.pkl", "wb") as f:
        pickle.dump({"fold the shirt": torch.randn(1, 6, CFG["text_embed_dim"])}, f)
    assert load_t5_pickle(tmp_path / "t5.pkl")["fold the shirt"].shape == (6, CFG["text_embed_dim"])
    convert_checkpoint(
        tmp_path / "model.pt", tmp_path / "stats.json", tmp_path / "t5.pkl", tmp_path / "out",
        planning=True, transformer_config=CFG, dtype=torch.float32, progress=False, vae="/nonexistent/wan",
    )
    cfg = json.loads((tmp_path / "out" / "cosmos_policy.json").read_text())
    assert cfg["vae"]["pretrained_model_name_or_path"] == "/nonexistent/wan"
    assert cfg["layout"]["conditions"]["value"] == ["blank", "future_proprio", "future_left_wrist",
                                                     "future_right_wrist", "future_cam_high"]
    # official ALOHA chain and seed: frames -> 256x256 first (as the training data was stored), seed 195
    assert (cfg["stored_image_size"], cfg["image_size"], cfg["seed"]) == (256, 224, 195)
    ckpt = CosmosCheckpoint.from_pretrained(tmp_path / "out", load_vae=False)
    assert (ckpt.config.stored_image_size, ckpt.config.seed) == (256, 195)
    reference = CosmosTransformer3DModel(**CFG).eval()
    reference.load_state_dict(convert_cosmos_transformer_checkpoint_to_diffusers(native_state_dict()))
    torch.testing.assert_close(run_network(ckpt.transformer), run_network(reference), rtol=0, atol=0)
    with pytest.raises(Exception, match="vae"):
        CosmosCheckpoint.from_pretrained(tmp_path / "out")


def test_t5_pickle_refuses_arbitrary_objects(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("boom",))

    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"task": Evil()}, f)
    with pytest.raises(ConversionError, match="refusing"):
        load_t5_pickle(tmp_path / "evil.pkl")
