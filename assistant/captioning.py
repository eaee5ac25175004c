"""Captions for pictures: from the assistant's own vision, or from a Hugging Face image-to-text model.

``AssistantCaptioner`` asks the loaded assistant to describe the picture, and, where its connector
keeps the encoder's grid and scores objectness (the default ``mlp`` does), also reads what each
chosen cell says: the words its tokens are nearest to in the LLM's vocabulary and the cell's box. That
is a grounded caption taken from the connector itself (object words and where they are), beyond
what a plain captioner returns. ``HFCaptioner`` runs any image-to-text checkpoint (BLIP, GIT, ...) by
id or folder, offline unless downloads are allowed.

It knows nothing about files, plugins or training rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from PIL import Image

from assistant.errors import AssistantError
from assistant.media import load_image

PROMPTS = {"short": "Describe the scene briefly.", "detailed": "Describe the image."}
BACKGROUND_WORD = "background"
OBJECTNESS_THRESHOLD = 0.5  # the objectness head is trained (BCE) to fire on cells that hold an object's centre


@dataclass(frozen=True)
class GroundedObject:
    """What one grid cell of the connector says: its words, its box (fractions x0, y0, x1, y1), its score."""

    words: str
    box: tuple[float, float, float, float]
    score: float


@dataclass(frozen=True)
class Caption:
    text: str
    objects: tuple[GroundedObject, ...] = ()


class Captioner(Protocol):
    name: str

    def caption(self, image: Image.Image, detail: str = "short") -> Caption: ...


class AssistantCaptioner:
    """Captions from an ``Assistant``'s own vision; grounded objects where its connector has cells."""

    def __init__(self, assistant: Any, max_new_tokens: int = 96) -> None:
        self.assistant = assistant
        self.max_new_tokens = max_new_tokens
        self.name = "assistant:" + assistant.describe()["llm"]

    def caption(self, image: Image.Image, detail: str = "short") -> Caption:
        if detail not in PROMPTS:
            raise AssistantError(f"detail must be one of {sorted(PROMPTS)}, got {detail!r}")
        messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": PROMPTS[detail]}]}]
        text = self.assistant.chat(messages, max_new_tokens=self.max_new_tokens).strip()
        return Caption(text, tuple(self.grounded_objects(image)) if detail == "detailed" else ())

    @torch.inference_mode()
    def grounded_objects(self, image: Image.Image) -> list[GroundedObject]:
        """Cells the connector scores as holding an object, each with the words its tokens read as and its box.

        The encoder's tokens come from the assistant's feature cache, so after ``caption`` the picture
        is not encoded again.

        Only chosen cells with objectness above ``OBJECTNESS_THRESHOLD`` whose tokens do not read as
        background count; neighbouring cells that read the same words (a large object over two cells)
        become one object with the union of their boxes. Empty for connectors without a grid and
        objectness scores (e.g. the resampler).
        """
        model, tokenizer = self.assistant.model, self.assistant.tokenizer
        if "image" not in model.encoders:
            return []
        connector, encoder = model.connectors["image"], model.encoders["image"]
        if not getattr(connector, "keeps_grid", False) or not getattr(encoder, "grid", None) or not hasattr(connector, "chosen_cells"):
            return []
        frame = load_image(image, self.assistant.config.media).frames[0]  # as the chat loads it: same cache key
        cells, scores = model.connect_cells("image", self.assistant.encoded("image", frame).unsqueeze(0).float())
        if scores is None:
            return []
        embeddings = model.llm.get_input_embeddings().weight.float()  # (V, D)
        nearest = (cells[0].float() @ embeddings.T).argmax(dim=-1)  # (N, S)
        grid = encoder.grid
        found: list[GroundedObject] = []
        for cell in connector.chosen_cells(scores)[0].tolist():
            score = float(torch.sigmoid(scores[0, cell]))
            words = [tokenizer.decode([int(token)]).strip() for token in nearest[cell]]
            words = [word for word in words if word and word != BACKGROUND_WORD]
            if score < OBJECTNESS_THRESHOLD or not words:
                continue
            row, column = divmod(cell, grid)
            box = (column / grid, row / grid, (column + 1) / grid, (row + 1) / grid)
            text = " ".join(dict.fromkeys(words))
            twin = next((i for i, obj in enumerate(found) if obj.words == text and _touching(obj.box, box)), None)
            if twin is not None:
                old = found[twin]
                box = (min(old.box[0], box[0]), min(old.box[1], box[1]), max(old.box[2], box[2]), max(old.box[3], box[3]))
                found[twin] = GroundedObject(text, box, max(old.score, round(score, 3)))
            else:
                found.append(GroundedObject(text, box, round(score, 3)))
        return [GroundedObject(obj.words, tuple(round(v, 3) for v in obj.box), obj.score) for obj in found]


class HFCaptioner:
    """Any Hugging Face image-to-text checkpoint (BLIP, GIT, ...), by id or local folder."""

    def __init__(self, model: str, allow_download: bool = False, trust_remote_code: bool = False, max_new_tokens: int = 40,
                 device: str = "cpu") -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        try:
            self.processor = AutoProcessor.from_pretrained(model, local_files_only=not allow_download, trust_remote_code=trust_remote_code)
            self.model = AutoModelForImageTextToText.from_pretrained(model, local_files_only=not allow_download,
                                                                     trust_remote_code=trust_remote_code).to(device).eval()
        except Exception as error:  # OSError / ValueError from transformers for missing or unsupported checkpoints
            raise AssistantError(f"cannot load the image-to-text model {model!r}: {error}") from None
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.name = f"hf:{model}"

    @torch.inference_mode()
    def caption(self, image: Image.Image, detail: str = "short") -> Caption:
        if detail not in PROMPTS:
            raise AssistantError(f"detail must be one of {sorted(PROMPTS)}, got {detail!r}")
        inputs = self.processor(images=image.convert("RGB"), return_tensors="pt").to(self.device)
        limit = self.max_new_tokens if detail == "short" else 2 * self.max_new_tokens
        ids = self.model.generate(**inputs, max_new_tokens=limit, do_sample=False)
        return Caption(self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip())


def _touching(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Whether two cell boxes share an edge or a corner (or overlap)."""
    epsilon = 1e-6
    return a[0] <= b[2] + epsilon and b[0] <= a[2] + epsilon and a[1] <= b[3] + epsilon and b[1] <= a[3] + epsilon
