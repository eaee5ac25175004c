"""Turn validated rows into training examples: token ids, labels on assistant tokens only, frames.

Ids come from the ``Assistant``'s own ``PromptBuilder`` (the LLM's chat template and the placeholder
contract), so training sees exactly the prompt layout that inference builds. Labels cover each
assistant turn's tokens (its text and end-of-turn marker); everything else is ``IGNORE_INDEX``.
Modality dropout removes media parts before encoding, so dropped items leave no placeholder behind.
An audio part may carry ``"transcript"``: the words it holds (or a description of a sound), the
target of audio alignment (``training.audio_alignment``); the model never sees it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch

from assistant import Assistant, AssistantError
from assistant.audio import AudioClip
from assistant.errors import MediaError
from assistant.media import Frame
from assistant.model import IGNORE_INDEX
from assistant.messages import Message, validate_messages
from assistant.processor import PromptBuilder
from assistant.tools.spec import tool_specs
from training.data.rows import BadRow, Region, Row


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    frames: list[Frame]  # in order of appearance, one per image / video frame
    regions: list[tuple[int, Region]] = field(default_factory=list)  # (index into ``frames``, region)
    clips: list[AudioClip] = field(default_factory=list)  # audio clips in order of appearance
    transcripts: list[str | None] = field(default_factory=list)  # per clip: the words it holds, if the row says


def parse_messages(assistant: Assistant, messages: list[dict[str, Any]]) -> list[Message]:
    """Validate a training conversation and load its media (rows end with an assistant turn), as serving does."""
    return validate_messages(
        messages, assistant.config.media, assistant.supported_media, assistant.frames_per_video,
        assistant.media_loaders(), final_roles=("assistant",), audio_budget=assistant.audio_budget,
    )


def encode_conversation(builder: PromptBuilder, parsed: list[Message], tools: list[dict[str, Any]] | None = None) -> Example:
    """Ids for the whole conversation (with ``tools`` on offer) with labels on assistant turns, tool calls included.

    Raises:
        BadRow: ``template_not_prefix_stable`` when the template renders a conversation's prefix
            differently from the start of the whole conversation (training would not match serving).
    """
    specs = tool_specs(tools)
    full = builder.build(parsed, add_generation_prompt=False, tools=specs)
    labels = [IGNORE_INDEX] * len(full.input_ids)
    for index, message in enumerate(parsed):
        if message.role != "assistant":
            continue
        if index == 0:
            raise BadRow("malformed_row", "a conversation cannot start with an assistant turn")
        prompt = builder.build(parsed[:index], add_generation_prompt=True, tools=specs).input_ids
        through = builder.build(parsed[: index + 1], add_generation_prompt=False, tools=specs).input_ids
        if full.input_ids[: len(through)] != through or through[: len(prompt)] != prompt:
            raise BadRow("template_not_prefix_stable", f"the chat template renders turn {index} differently in context")
        labels[len(prompt) : len(through)] = through[len(prompt) :]
    frames = [span.frame for span in full.spans if span.modality == "image"]
    return Example(full.input_ids, labels, frames, clips=[span.frame for span in full.spans if span.modality == "audio"])


def frame_regions(parsed: list[Message], regions: list[Region]) -> list[tuple[int, Region]]:
    """Each region paired with the frames of the picture it describes (every frame, for a video)."""
    spans, start = [], 0
    for message in parsed:
        for item in message.media:
            if item.modality == "audio":  # regions name pictures; an audio part has no frame in ``frames``
                spans.append(range(start, start))
                continue
            spans.append(range(start, start + len(item.frames)))
            start += len(item.frames)
    return [(frame, region) for region in regions for frame in spans[region.image]]  # indices checked by parse_regions


def drop_media(messages: list[dict[str, Any]], probability: float, rng: random.Random) -> list[dict[str, Any]]:
    """Remove each media part with ``probability`` (text is kept, so the row stays trainable)."""
    if probability <= 0:
        return messages
    kept = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = [p for p in content if p.get("type") == "text" or rng.random() >= probability]
            if not content:
                content = [{"type": "text", "text": "(no media)"}]
            message = {**message, "content": content}
        kept.append(message)
    return kept


def check_row(assistant: Assistant, builder: PromptBuilder, row: Row, max_length: int) -> int:
    """Open the row's media and tokenize it; returns its length or raises ``BadRow``."""
    try:
        parsed = parse_messages(assistant, row.messages)
    except MediaError as error:
        raise BadRow("unreadable_media", str(error)) from None
    except AssistantError as error:
        raise BadRow("malformed_row", str(error)) from None
    example = encode_conversation(builder, parsed, row.tools)
    if len(example.input_ids) > max_length:
        raise BadRow("too_long", f"{len(example.input_ids)} tokens, over max_length={max_length}")
    return len(example.input_ids)


class ConversationDataset(torch.utils.data.Dataset):
    """Valid rows, encoded on access. Items are addressed by (epoch, index) so modality dropout is a
    pure function of (seed, epoch, index): a resumed run sees exactly the examples it would have seen."""

    def __init__(
        self, assistant: Assistant, builder: PromptBuilder, rows: list[Row], modality_dropout: float = 0.0, seed: int = 0
    ) -> None:
        self.assistant = assistant
        self.builder = builder
        self.rows = rows
        self.modality_dropout = modality_dropout
        self.seed = seed

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: tuple[int, int]) -> Example:
        epoch, index = key
        rng = random.Random(f"{self.seed}:{epoch}:{index}")
        row = self.rows[index]
        return encode_row(self.assistant, self.builder, row, drop_media(row.messages, self.modality_dropout, rng))


def encode_row(assistant: Assistant, builder: PromptBuilder, row: Row, messages: list[dict[str, Any]] | None = None) -> Example:
    """``row`` (or ``messages``, the row after modality dropout) as an ``Example``; the row's regions
    are attached only when none of its media was dropped, since their indices name the row's media."""
    messages = row.messages if messages is None else messages
    parsed = parse_messages(assistant, messages)
    example = encode_conversation(builder, parsed, row.tools)
    if row.regions and sum(len(message.media) for message in parsed) == row.media_count:
        example.regions = frame_regions(parsed, row.regions)
    if example.clips:
        said = [part.get("transcript") for message in messages if isinstance(message.get("content"), list)
                for part in message["content"] if isinstance(part, dict) and part.get("type") == "audio"]
        example.transcripts = said if len(said) == len(example.clips) else [None] * len(example.clips)
    return example


def collate(examples: list[Example], pad_id: int) -> dict[str, Any]:
    """Right-padded batch; ``frames`` are row-major, matching the model's placeholder fill order."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        length = len(example.input_ids)
        input_ids[row, :length] = torch.tensor(example.input_ids)
        labels[row, :length] = torch.tensor(example.labels)
        attention_mask[row, :length] = 1
    frames = [frame for example in examples for frame in example.frames]
    frames_per_row = [len(example.frames) for example in examples]
    clips = [clip for example in examples for clip in example.clips]
    transcripts = [text for example in examples for text in (example.transcripts or [None] * len(example.clips))]
    regions, offset = [], 0  # (index into ``frames``, region) for the whole batch
    for example in examples:
        regions += [(offset + frame, region) for frame, region in example.regions]
        offset += len(example.frames)
    return {
        "input_ids": input_ids, "labels": labels, "attention_mask": attention_mask, "frames": frames,
        "frames_per_row": frames_per_row, "regions": regions, "clips": clips, "transcripts": transcripts,
    }
