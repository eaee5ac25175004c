"""Render a conversation with the LLM's chat template and expand media into placeholder positions.

The placeholder contract: each media frame becomes exactly as many positions holding
``PLACEHOLDER_IDS[modality]`` as the connector makes tokens for it (a fixed count per image, a count
that follows the duration for an audio clip); the model replaces those positions by the connector's
output and raises if the counts differ. Video frames are images, each preceded by a timestamp in text
so the LLM gets the temporal order. Training and inference build token ids through this one module, so what is
trained is what is served. This module knows nothing about torch modules or generation.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Hashable

from transformers import PreTrainedTokenizerBase

from assistant.errors import AssistantError
from assistant.messages import Message
from assistant.tools.formats import build_tool_format
from assistant.tools.spec import ToolSpec

logger = logging.getLogger(__name__)

PLACEHOLDER_IDS = {"image": -200, "audio": -300}
_MARKER = re.compile("\ue000(\\d+)\ue001|\ue002(\\d+)\ue003")  # a media frame | untrusted text


@dataclass(frozen=True)
class MediaSpan:
    """Where one frame's tokens sit in the prompt."""

    modality: str
    start: int
    length: int
    frame: Any  # an ``assistant.media.Frame``, or an ``assistant.audio.AudioClip``


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
    """Turns validated messages (and the tools on offer) into a ``Prompt`` with the LLM's own chat template.

    Tools reach the model through the template when it accepts ``tools=`` (Qwen2.5, Llama 3.x style);
    otherwise the tool format writes them into the system message, earlier calls into the assistant
    turns and results into fenced user turns. Message text is data: wherever it spells one of the
    tokenizer's special or added tokens (``<|im_start|>``...), it is tokenised so that it never
    yields that token's id, so no text from a user, a file or a tool can forge a turn.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        tokens_per_frame: dict[str, int] | Callable[[str, Any], int],
        system_prompt: str | None = None,
        tool_format: str = "hermes",
    ) -> None:
        """``tokens_per_frame``: a fixed count per modality, or ``(modality, frame) -> count``
        (``MultimodalModel.media_tokens``, which audio needs)."""
        self.tokenizer = tokenizer
        if callable(tokens_per_frame):
            self.media_tokens = tokens_per_frame
        else:
            self.media_tokens = lambda modality, frame: tokens_per_frame[modality]
        self.system_prompt = system_prompt
        self.tool_format = build_tool_format(tool_format)
        self.native_tools = template_renders_tools(tokenizer)
        added = set(tokenizer.all_special_tokens) | set(tokenizer.get_added_vocab())
        self.special_strings = sorted((token for token in added if token), key=len, reverse=True)

    def _template_messages(
        self, messages: list[Message], tools: list[ToolSpec]
    ) -> tuple[list[dict[str, Any]], list[tuple[str, Any]], list[str]]:
        """Plain-string messages for the chat template, with a marker where each frame goes and where
        untrusted text that spells a special token goes (tokenised apart in ``build``)."""
        frames: list[tuple[str, Any]] = []  # (encoder modality, frame or clip)
        untrusted: list[str] = []

        def guard(text: str) -> str:
            if not self.spells_special(text):
                return text
            untrusted.append(text)
            return f"\ue002{len(untrusted) - 1}\ue003"

        def content(message: Message, is_result: bool = False) -> str:
            pieces = []
            for part in message.parts:
                if isinstance(part, str):
                    pieces.append(guard(self.tool_format.escape_result(part) if is_result else part))
                    continue
                markers = []
                for frame, timestamp in zip(part.frames, part.timestamps):
                    prefix = f"[{timestamp:.1f}s]" if part.modality == "video" else ""
                    markers.append(f"{prefix}\ue000{len(frames)}\ue001")
                    frames.append(("audio" if part.modality == "audio" else "image", frame))  # video frames are images
                pieces.append(("Video: " if part.modality == "video" else "") + "".join(markers))
            return "\n".join(pieces)

        rendered: list[dict[str, Any]] = []
        rest = messages
        system = self.system_prompt if messages[0].role != "system" else None
        if tools and not self.native_tools:
            if messages[0].role == "system":
                system, rest = content(messages[0]), messages[1:]
            block = self.tool_format.system_block(tools)
            rendered.append({"role": "system", "content": f"{system}\n\n{block}" if system else block})
        elif system:
            rendered.append({"role": "system", "content": system})
        for message in rest:
            text = content(message, is_result=message.role == "tool" and not self.native_tools)
            if message.role == "tool" and not self.native_tools:
                if rendered and rendered[-1].get("tool_results") is not None:
                    rendered[-1]["tool_results"].append(text)  # consecutive results share one turn
                else:
                    rendered.append({"role": "user", "tool_results": [text]})
            elif message.role == "tool":
                rendered.append({"role": "tool", "content": text, "tool_call_id": message.tool_call_id, "name": message.name})
            elif message.tool_calls and self.native_tools:
                calls = [guard_strings(call.to_template(), guard) for call in message.tool_calls]
                rendered.append({"role": "assistant", "content": text, "tool_calls": calls})
            elif message.tool_calls:
                calls = self.tool_format.render_calls(message.tool_calls, guard)  # the format's own tags stay real tokens
                rendered.append({"role": "assistant", "content": "\n".join(([text] if text else []) + [calls])})
            else:
                rendered.append({"role": message.role, "content": text})
        for message in rendered:
            if "tool_results" in message:
                message["content"] = self.tool_format.render_results(message.pop("tool_results"))
        return rendered, frames, untrusted

    def build(self, messages: list[Message], add_generation_prompt: bool = True, tools: list[ToolSpec] | None = None) -> Prompt:
        """Token ids for the whole conversation (plus the assistant header when asked)."""
        rendered, frames, untrusted = self._template_messages(messages, tools or [])
        options = {"tools": [spec.openai() for spec in tools]} if tools and self.native_tools else {}
        try:
            text = self.tokenizer.apply_chat_template(
                rendered, tokenize=False, add_generation_prompt=add_generation_prompt, **options
            )
        except Exception as error:  # jinja errors from a template that rejects this conversation
            raise AssistantError(f"the chat template cannot render this conversation: {error}") from None
        input_ids: list[int] = []
        spans: list[MediaSpan] = []
        cursor = 0
        for match in _MARKER.finditer(text):
            input_ids += self.encode_text(text[cursor : match.start()])
            cursor = match.end()
            if match.group(2) is not None:
                input_ids += self.encode_untrusted(untrusted[int(match.group(2))])
                continue
            modality, frame = frames[int(match.group(1))]
            length = self.media_tokens(modality, frame)
            spans.append(MediaSpan(modality, len(input_ids), length, frame))
            input_ids += [PLACEHOLDER_IDS[modality]] * length
        input_ids += self.encode_text(text[cursor:])
        return Prompt(input_ids, spans)

    def spells_special(self, text: str) -> bool:
        return any(special in text for special in self.special_strings)

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def encode_untrusted(self, text: str) -> list[int]:
        """Ids for ``text`` that never include a special or added token, even where the text spells one:
        each such spelling is cut after its first character, so the tokenizer cannot match it."""
        ids: list[int] = []
        while True:
            found = [(text.find(special), special) for special in self.special_strings if special in text]
            if not found:
                return ids + self.encode_text(text)
            at, _ = min(found)
            ids += self.encode_text(text[: at + 1])
            text = text[at + 1 :]

    def build_within(self, messages: list[Message], max_tokens: int, tools: list[ToolSpec] | None = None) -> Prompt:
        """Build a prompt of at most ``max_tokens``, dropping the oldest turns if needed.

        A turn is a user message and everything after it up to the next user message; the system
        message and the last turn are always kept, and media go with the turn that holds them.
        """
        prompt = self.build(messages, tools=tools)
        if len(prompt.input_ids) <= max_tokens:
            return prompt
        head = 1 if messages[0].role == "system" else 0
        starts = [i for i in range(head, len(messages)) if messages[i].role == "user"]
        for cut in starts[1:]:
            kept = messages[:head] + messages[cut:]
            trimmed = self.build(kept, tools=tools)
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


def template_renders_tools(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the chat template writes the ``tools=`` it is given into the prompt."""
    probe = {"type": "function", "function": {"name": "zq_probe_tool", "description": "", "parameters": {"type": "object", "properties": {}}}}
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tools=[probe], tokenize=False)
    except Exception:  # a template that rejects tools= does not render them
        return False
    return "zq_probe_tool" in text


def guard_strings(value: Any, guard) -> Any:
    """``value`` with ``guard`` applied to every string inside it (dicts and lists walked)."""
    if isinstance(value, str):
        return guard(value)
    if isinstance(value, dict):
        return {key: guard_strings(item, guard) for key, item in value.items()}
    if isinstance(value, list):
        return [guard_strings(item, guard) for item in value]
    return value
