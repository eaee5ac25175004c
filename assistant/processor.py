"""Render a conversation with the LLM's chat template and expand media into placeholder positions.

The placeholder contract: each media frame becomes exactly ``tokens_per_frame[modality]`` positions
holding ``PLACEHOLDER_IDS[modality]``; the model replaces those positions by the connector's output and
raises if the counts differ. Video frames are images, each preceded by a timestamp in text so the LLM
gets the temporal order. Training and inference build token ids through this one module, so what is
trained is what is served. This module knows nothing about torch modules or generation.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Hashable

from transformers import PreTrainedTokenizerBase

from assistant.errors import AssistantError
from assistant.media import Frame
from assistant.messages import Message

logger = logging.getLogger(__name__)

PLACEHOLDER_IDS = {"image": -200, "audio": -300}
_MARKER = re.compile("\ue000(\\d+)\ue001")


@dataclass(frozen=True)
class MediaSpan:
    """Where one frame's tokens sit in the prompt."""

    modality: str
    start: int
    length: int
    frame: Frame


@dataclass
class Prompt:
    """Token ids with placeholder positions, the media that fill them, and per-position reuse keys."""

    input_ids: list[int]
    spans: list[MediaSpan]
    dropped_messages: int = 0

    def position_keys(self) -> list[Hashable]:
        """A key per position: the token id for text, (frame key, offset) for media."""
        keys: list[Hashable] = list(self.input_ids)
        for span in self.spans:
            for offset in range(span.length):
                keys[span.start + offset] = (span.frame.key, offset)
        return keys


class PromptBuilder:
    """Turns validated messages into a ``Prompt`` using the tokenizer's own chat template."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        tokens_per_frame: dict[str, int],
        system_prompt: str | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.tokens_per_frame = tokens_per_frame
        self.system_prompt = system_prompt

    def _template_messages(self, messages: list[Message]) -> tuple[list[dict[str, Any]], list[Frame]]:
        """Plain-string messages for the chat template, with a marker where each frame goes."""
        frames: list[Frame] = []
        rendered = []
        if self.system_prompt and messages[0].role != "system":
            rendered.append({"role": "system", "content": self.system_prompt})
        for message in messages:
            pieces = []
            for part in message.parts:
                if isinstance(part, str):
                    pieces.append(part)
                    continue
                markers = []
                for frame, timestamp in zip(part.frames, part.timestamps):
                    prefix = f"[{timestamp:.1f}s]" if part.modality == "video" else ""
                    markers.append(f"{prefix}\ue000{len(frames)}\ue001")
                    frames.append(frame)
                pieces.append(("Video: " if part.modality == "video" else "") + "".join(markers))
            rendered.append({"role": message.role, "content": "\n".join(pieces), **message.extras})
        return rendered, frames

    def build(self, messages: list[Message], add_generation_prompt: bool = True) -> Prompt:
        """Token ids for the whole conversation (plus the assistant header when asked)."""
        rendered, frames = self._template_messages(messages)
        try:
            text = self.tokenizer.apply_chat_template(
                rendered, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        except Exception as error:  # jinja errors from a template that rejects this conversation
            raise AssistantError(f"the chat template cannot render this conversation: {error}") from None
        input_ids: list[int] = []
        spans: list[MediaSpan] = []
        cursor = 0
        for match in _MARKER.finditer(text):
            input_ids += self.encode_text(text[cursor : match.start()])
            frame = frames[int(match.group(1))]
            modality = "image"  # video frames use the image encoder; audio gets its own marker kind later
            length = self.tokens_per_frame[modality]
            spans.append(MediaSpan(modality, len(input_ids), length, frame))
            input_ids += [PLACEHOLDER_IDS[modality]] * length
            cursor = match.end()
        input_ids += self.encode_text(text[cursor:])
        return Prompt(input_ids, spans)

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def build_within(self, messages: list[Message], max_tokens: int) -> Prompt:
        """Build a prompt of at most ``max_tokens``, dropping the oldest turns if needed.

        A turn is a user message and everything after it up to the next user message; the system
        message and the last turn are always kept, and media go with the turn that holds them.
        """
        prompt = self.build(messages)
        if len(prompt.input_ids) <= max_tokens:
            return prompt
        head = 1 if messages[0].role == "system" else 0
        starts = [i for i in range(head, len(messages)) if messages[i].role == "user"]
        for cut in starts[1:]:
            kept = messages[:head] + messages[cut:]
            trimmed = self.build(kept)
            if len(trimmed.input_ids) <= max_tokens:
                dropped = len(messages) - len(kept)
                logger.warning(
                    "conversation of %d tokens exceeds the context budget of %d: dropped the %d oldest "
                    "message(s), now %d tokens",
                    len(prompt.input_ids), max_tokens, dropped, len(trimmed.input_ids),
                )
                trimmed.dropped_messages = dropped
                return trimmed
        raise AssistantError(
            f"the last turn alone needs more than the {max_tokens} tokens the context window leaves "
            f"(conversation is {len(prompt.input_ids)} tokens); shorten it or send fewer media items"
        )
