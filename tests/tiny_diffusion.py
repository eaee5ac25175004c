"""Tiny random text-to-image models for tests, built from configs as diffusers' own tests do (nothing downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def tiny_stable_diffusion(folder: Path) -> Path:
    """Save a random Stable Diffusion pipeline (8/16-channel UNet and VAE, 2-layer CLIP text model) to ``folder``."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocabulary = folder.parent / (folder.name + "_tokenizer")
    vocabulary.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(letter, len(vocab))
        vocab.setdefault(letter + "</w>", len(vocab))
    (vocabulary / "vocab.json").write_text(json.dumps(vocab))
    (vocabulary / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(vocabulary / "vocab.json"), str(vocabulary / "merges.txt"), model_max_length=77)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8, norm_num_groups=4, attention_head_dim=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4, sample_size=16,
    )
    text = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=8, intermediate_size=16, num_attention_heads=2,
        num_hidden_layers=2, vocab_size=len(vocab), max_position_embeddings=77, projection_dim=8,
    ))
    StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text, tokenizer=tokenizer, scheduler=DDIMScheduler(), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    ).save_pretrained(folder)
    return folder


def tiny_scene_model(folder: Path) -> Path:
    """Save a random scene model (32-pixel pictures, 8-pixel cells, two 32-channel levels, the second attending) to ``folder``."""
    from plugins.text_to_image.scene_model import PromptEncoder, SceneModel, SceneModelConfig, build_scheduler, build_unet

    torch.manual_seed(0)
    config = SceneModelConfig(resolution=32, patch=8, channels=(32, 32), attention_from=1, default_steps=3)
    prompts = PromptEncoder(config.text_encoder, config.text_tokens)
    SceneModel(build_unet(config, prompts.dim).eval(), build_scheduler(), config, prompts).save(folder)
    return folder
