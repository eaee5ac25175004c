"""Any Hugging Face vision tower (CLIP, SigLIP, ViT, ...) by hub id or local folder.

For dual-encoder checkpoints (CLIP, SigLIP) only the vision tower is built, from the checkpoint's
``vision_config``. Tokens come from one hidden layer (``feature_layer``, LLaVA uses -2); a leading
CLS token is dropped when the model has one. Preprocessing is the checkpoint's own image processor.
"""

from __future__ import annotations

import logging
import math

import torch
from PIL import Image

from assistant.config import EncoderConfig
from assistant.encoders.base import MediaEncoder, register_encoder
from assistant.errors import AssistantError

logger = logging.getLogger(__name__)


class HFVisionEncoder(MediaEncoder):
    modality = "image"

    def __init__(self, config: EncoderConfig, allow_download: bool = False, trust_remote_code: bool = False) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoImageProcessor, AutoModel
        from transformers.utils import logging as hf_logging

        source = config.model
        options = {"local_files_only": not allow_download, "trust_remote_code": trust_remote_code}
        try:
            model_config = AutoConfig.from_pretrained(source, **options)
            vision_config = getattr(model_config, "vision_config", None) or model_config
            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()  # a dual encoder's text-tower weights are skipped on purpose
            try:
                self.model = AutoModel.from_pretrained(source, config=vision_config, **options)
            finally:
                hf_logging.set_verbosity(verbosity)
            self.processor = AutoImageProcessor.from_pretrained(source, **options)
        except OSError as error:
            raise AssistantError(
                f"cannot load vision encoder {source!r}: {error}. Pass a local folder, or a hub id "
                "whose weights are already in the Hugging Face cache (or set allow_download)."
            ) from None
        self.feature_layer = -2 if config.feature_layer is None else config.feature_layer
        self.hidden_size = vision_config.hidden_size
        self.freeze()
        probe = self.features(self.preprocess([Image.new("RGB", (64, 64))]))
        patches = self._num_patches(vision_config)
        self.drop_cls = config.drop_cls_token and patches is not None and probe.shape[1] == patches + 1
        self.num_tokens = probe.shape[1] - int(self.drop_cls)
        # Patch tokens in raster order: token i is cell i of a grid x grid map of the whole picture (None
        # when they are not, or when the processor centre-crops, so cells do not cover the whole picture).
        crops = bool(getattr(self.processor, "do_center_crop", False))
        self.grid = math.isqrt(patches) if patches is not None and self.num_tokens == patches and not crops else None
        self.description = f"{source} (layer {self.feature_layer}, {self.num_tokens} tokens x {self.hidden_size})"

    @staticmethod
    def _num_patches(vision_config: object) -> int | None:
        image_size, patch_size = getattr(vision_config, "image_size", None), getattr(vision_config, "patch_size", None)
        if isinstance(image_size, int) and isinstance(patch_size, int):
            return (image_size // patch_size) ** 2
        return None

    def preprocess(self, media: list[Image.Image]) -> torch.Tensor:
        return self.processor(images=[image.convert("RGB") for image in media], return_tensors="pt")["pixel_values"]

    def features(self, batch: torch.Tensor) -> torch.Tensor:
        dtype = next(self.model.parameters()).dtype
        outputs = self.model(pixel_values=batch.to(dtype), output_hidden_states=True)
        tokens = outputs.hidden_states[self.feature_layer]  # (B, N(+1), D)
        return tokens[:, 1:] if getattr(self, "drop_cls", False) else tokens


@register_encoder("hf_vision")
def build_hf_vision(config: EncoderConfig, allow_download: bool, trust_remote_code: bool) -> MediaEncoder:
    return HFVisionEncoder(config, allow_download, trust_remote_code)
