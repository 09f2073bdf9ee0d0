"""SDXL in the original (LDM / A1111) single-file key layout: what users' .safetensors checkpoints
look like. Ported from diffusers' scripts/convert_diffusers_to_original_sdxl.py but derived from
the configs instead of hard-coding SDXL's 3 UNet / 4 VAE levels."""

from __future__ import annotations

from pathlib import Path

import torch

from ourvidz.families.builders import save_pipeline_configs

_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
           ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}


def _unet_prefix_map(cfg) -> list[tuple[str, str]]:
    per = cfg["layers_per_block"] + 1
    pairs = [("mid_block.resnets.0.", "middle_block.0."), ("mid_block.attentions.0.", "middle_block.1."),
             ("mid_block.resnets.1.", "middle_block.2.")]
    for i in range(len(cfg["down_block_types"])):
        for j in range(per - 1):
            pairs.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{i * per + j + 1}.0."))
            pairs.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{i * per + j + 1}.1."))
        pairs.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(i + 1) * per}.0.op."))
    for i, kind in enumerate(cfg["up_block_types"]):
        for j in range(per):
            pairs.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{i * per + j}.0."))
            pairs.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{i * per + j}.1."))
        slot = 2 if "CrossAttn" in kind else 1  # the upsampler follows the attention when there is one
        pairs.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{i * per + per - 1}.{slot}."))
    return pairs


def unet_to_ldm(sd: dict, cfg) -> dict:
    prefixes = _unet_prefix_map(cfg)
    out = {}
    for k, v in sd.items():
        stem, _, leaf = k.rpartition(".")
        if stem in _UNET_TOP:
            out[f"{_UNET_TOP[stem]}.{leaf}"] = v
            continue
        for hf, ldm in prefixes:
            if k.startswith(hf):
                rest = k[len(hf):]
                if ".resnets." in hf:
                    for a, b in _RESNET:
                        rest = rest.replace(a + ".", b + ".", 1) if rest.startswith(a + ".") else rest
                k = ldm + rest
                break
        else:
            raise KeyError(f"no LDM name for UNet key {k}")
        out[k] = v
    return out


def vae_to_ldm(sd: dict, cfg) -> dict:
    n = len(cfg["block_out_channels"])
    pairs = [("mid_block.attentions.0.", "mid.attn_1."), ("mid_block.resnets.0.", "mid.block_1."),
             ("mid_block.resnets.1.", "mid.block_2."), ("conv_norm_out.", "norm_out.")]
    for i in range(n):
        pairs += [(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block."),
                  (f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."),
                  (f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{n - 1 - i}.block."),
                  (f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{n - 1 - i}.upsample.")]
    attn = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}
    out = {}
    for k, v in sd.items():
        for hf, ldm in pairs:
            k = k.replace(hf, ldm)
        k = k.replace("conv_shortcut.", "nin_shortcut.")
        if ".mid.attn_1." in k:
            head, _, rest = k.partition(".mid.attn_1.")
            for a, b in attn.items():
                rest = b + rest[len(a):] if rest.startswith(a) else rest
            k = f"{head}.mid.attn_1.{rest}"
            if v.ndim == 2:  # LDM stores the attention projections as 1x1 convs
                v = v[:, :, None, None]
        out[k] = v
    return out


def clip_l_to_ldm(sd: dict) -> dict:
    # transformers >= 5.6 saves CLIPTextModel without the "text_model." level; LDM files have it.
    return {"text_model." + k.removeprefix("text_model."): v for k, v in sd.items() if not k.endswith("position_ids")}


def open_clip_to_ldm(sd: dict) -> dict:
    top = {"text_model.embeddings.token_embedding.weight": "token_embedding.weight",
           "text_model.embeddings.position_embedding.weight": "positional_embedding",
           "text_model.final_layer_norm.weight": "ln_final.weight", "text_model.final_layer_norm.bias": "ln_final.bias"}
    parts = [("text_model.encoder.layers.", "transformer.resblocks."), (".layer_norm1.", ".ln_1."),
             (".layer_norm2.", ".ln_2."), (".mlp.fc1.", ".mlp.c_fc."), (".mlp.fc2.", ".mlp.c_proj."),
             (".self_attn.out_proj.", ".attn.out_proj.")]
    out, qkv = {}, {}
    for k, v in sd.items():
        if k.endswith("position_ids"):
            continue
        if k == "text_projection.weight":
            out["text_projection"] = v.T.contiguous()  # open_clip multiplies x @ text_projection
        elif k in top:
            out[top[k]] = v
        elif ".self_attn." in k and k.split(".")[-2] in ("q_proj", "k_proj", "v_proj"):
            pre, proj, leaf = k.rsplit(".", 2)
            qkv.setdefault((pre, leaf), {})[proj[0]] = v
        else:
            for a, b in parts:
                k = k.replace(a, b)
            out[k] = v
    for (pre, leaf), t in qkv.items():
        pre = pre.replace(*parts[0]).replace(".self_attn", ".attn")
        out[f"{pre}.in_proj_{leaf}"] = torch.cat([t["q"], t["k"], t["v"]])
    return out


def sdxl_to_ldm_state_dict(pipe) -> dict:
    sd = {}
    for prefix, part in (
        ("model.diffusion_model.", unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config)),
        ("first_stage_model.", vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config)),
        ("conditioner.embedders.0.transformer.", clip_l_to_ldm(pipe.text_encoder.state_dict())),
        ("conditioner.embedders.1.model.", open_clip_to_ldm(pipe.text_encoder_2.state_dict())),
    ):
        sd.update({prefix + k: v.detach().contiguous() for k, v in part.items()})
    return sd


def save_single_file(pipe, path, config_dir=None) -> Path:
    """One A1111-style .safetensors (UNet + VAE + both text encoders); optionally the weightless
    config folder that `StableDiffusionXLPipeline.from_single_file(path, config=config_dir)` needs."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sdxl_to_ldm_state_dict(pipe), str(path))
    if config_dir is not None:
        save_pipeline_configs(pipe, config_dir)
    return path
