"""``Assistant``: the Python API for multi-turn multimodal chat, and the one adapter artifact.

It validates a conversation, loads its media, builds the prompt through the chat template, fetches
encoder features (from the content-hash cache when seen before), and streams text from the decode engine
(``assistant.batching``, or llama.cpp's: ``assistant.llama_cpp_engine``), which decodes concurrent requests
together and starts each from the longest KV prefix it has cached (the conversation's previous turn, or a
system prompt another session shares). Any number of threads may call it at once: each request has its own
cancel event, and one request never changes another's output. A bad request raises ``AssistantError`` and
leaves the assistant as it was.

Tool calling is orchestrated here and implemented in ``assistant.tools``: ``stream_events`` is one
generation step with tools on offer (typed events, calls decoded under a grammar), ``run`` and
``run_stream`` the whole generate -> run tools -> generate loop.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from assistant.audio import AudioBudget, load_audio
from assistant.config import AssistantConfig
from assistant.connector_weights import load_connectors
from assistant.encoders import build_encoder
from assistant.errors import AssistantError
from assistant.feature_cache import FeatureCache
from assistant.generation import EngineCounters, SamplingOptions
from assistant.llm import attach_lora, load_language_model, load_lora
from assistant.llm_serving import decode_engine, prepare_for_serving, resolve_mode
from assistant.messages import Message, filter_user_text, validate_messages
from assistant.model import MultimodalModel
from assistant.processor import Prompt, PromptBuilder
from assistant.tools.events import AssistantTurn, Event
from assistant.tools.formats import CallStreamParser
from assistant.tools.grammar import GrammarCompiler, bounded_specs, json_reply_tag
from assistant.tools.loop import run_loop
from assistant.tools.runner import Confirm
from assistant.tools.spec import parse_tool_choice, tool_specs

logger = logging.getLogger(__name__)

CONFIG_FILE = "assistant_config.json"
CONNECTORS_FILE = "connectors.safetensors"
LORA_FOLDER = "lora"
TEMPLATE_FILE = "chat_template.jinja"
SHIPPED_DEFAULT = Path(__file__).parent / "default_adapter"


@dataclass
class AssistantStats(EngineCounters):
    """Cumulative counters since the assistant was created (see ``EngineCounters`` for token counts)."""

    requests: int = 0
    encoder_calls: int = 0  # frames run through a frozen encoder
    media_cache_hits: int = 0  # frames whose features came from the cache
    dropped_messages: int = 0  # messages dropped to fit the context window
    last_time_to_first_token_s: float = 0.0
    last_tokens_per_second: float = 0.0


@dataclass(eq=False)
class _Request:
    cancel: threading.Event
    session: str | None = None
    finish_reason: str = "stop"  # stop | length | cancelled, set when the stream ends
    generated: int = 0


class Assistant:
    def __init__(self, model: MultimodalModel, tokenizer: Any, config: AssistantConfig) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.stats = AssistantStats()
        self.text_filters: list[Callable[[str], str]] = []  # run on user text before any prompt is built (e.g. a PHI redactor)
        tokens_per_frame = model.tokens_per_frame()
        self.prompt_builder = PromptBuilder(tokenizer, model.media_tokens, config.system_prompt, config.tools.format)
        self._features = FeatureCache(config.media.cache_mb)
        stop_ids = {tokenizer.eos_token_id} | set(_as_list(model.llm.generation_config.eos_token_id))
        self._stop_ids = {i for i in stop_ids if i is not None}
        self._engine = decode_engine(model, config, self._stop_ids, self.stats)
        self._grammars = GrammarCompiler(tokenizer, model.llm.get_output_embeddings().weight.shape[0], self._stop_ids)
        self._lock = threading.Lock()  # guards the set of active requests and the counters below
        self._active: set[_Request] = set()
        image_tokens = tokens_per_frame.get("image", 0)
        self.frames_per_video = max(1, min(config.media.video_max_frames, config.media.video_token_budget // max(image_tokens, 1)))
        self.context_window = config.llm.max_context_tokens or model.llm.config.max_position_embeddings
        self.audio_budget = None
        if "audio" in model.encoders:
            self.audio_budget = AudioBudget(
                config.media.audio_token_budget, lambda samples: model.tokens_for_samples("audio", samples),
                lambda tokens: model.samples_within("audio", tokens),
            )

    # ---------------------------------------------------------------- construction and artifacts

    @classmethod
    def from_config(cls, config: AssistantConfig | None = None, seed: int = 0) -> "Assistant":
        """Build an assistant with freshly initialised connectors (and LoRA if ``config.llm.lora.r``)."""
        config = config or AssistantConfig()
        llm, tokenizer = load_language_model(config.llm, config.allow_download, config.trust_remote_code)
        encoders = {
            modality: build_encoder(settings.encoder, config.allow_download, config.trust_remote_code)
            for modality, settings in config.modalities.items()
        }
        with torch.random.fork_rng():
            torch.manual_seed(seed)  # the same config always gives the same fresh connectors
            llm = prepare_for_serving(attach_lora(llm, config.llm.lora), config.llm.serving)
            model = MultimodalModel.build(config, llm, encoders)
        model.eval()
        return cls(model, tokenizer, config)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, **overrides: Any) -> "Assistant":
        """Load an adapter artifact written by ``save_pretrained``; with no path, the built-in default.

        Args:
            path: Artifact folder. ``None`` loads the shipped default adapter, or the default
                encoder + LLM with untrained connectors when no adapter is shipped.
            overrides: ``AssistantConfig`` fields to replace (e.g. ``system_prompt``); ``serving="int8"`` (a mode
                of ``assistant.llm_serving``) replaces ``llm.serving`` alone.
        """
        serving = overrides.pop("serving", None)
        if path is None:
            if not (SHIPPED_DEFAULT / CONFIG_FILE).is_file():
                logger.warning("no trained default adapter is shipped: image tokens pass through an untrained connector")
                return cls.from_config(dataclasses.replace(AssistantConfig(), **overrides))
            path = SHIPPED_DEFAULT
        folder = Path(path)
        if not (folder / CONFIG_FILE).is_file():
            raise AssistantError(f"{folder} is not an assistant artifact (no {CONFIG_FILE})")
        config = dataclasses.replace(AssistantConfig.load(folder / CONFIG_FILE), **overrides)
        config.llm = dataclasses.replace(config.llm, serving=serving or config.llm.serving)
        llm, tokenizer = load_language_model(config.llm, config.allow_download, config.trust_remote_code)
        if (folder / TEMPLATE_FILE).is_file():
            tokenizer.chat_template = (folder / TEMPLATE_FILE).read_text()
        if (folder / LORA_FOLDER).is_dir():
            llm = load_lora(llm, folder / LORA_FOLDER)
        encoders = {
            modality: build_encoder(settings.encoder, config.allow_download, config.trust_remote_code)
            for modality, settings in config.modalities.items()
        }
        model = MultimodalModel.build(config, prepare_for_serving(llm, config.llm.serving), encoders)
        load_connectors(model.connectors, folder / CONNECTORS_FILE)
        model.eval()
        return cls(model, tokenizer, config)

    def save_pretrained(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> None:
        """Write the artifact: config JSON, connector weights, LoRA (PEFT files), chat template.

        Args:
            path: Target folder; replaced atomically, so a crash never leaves a half-written artifact.
            dtype: Store connector and LoRA weights in this dtype (e.g. ``torch.bfloat16``); default as trained.
        """
        from safetensors.torch import load_file, save_file

        if resolve_mode(self.config.llm.serving, self.model.llm) not in ("eager", "llama_cpp"):  # LoRA merged: it would be lost
            raise AssistantError(f"a serving copy ({self.config.llm.serving!r}) cannot be saved; load with serving='eager'")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
        try:
            self.config.save(staging / CONFIG_FILE)
            state = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in self.model.connectors.state_dict().items()}
            save_file(state, str(staging / CONNECTORS_FILE), metadata={"format": "pt"})
            if hasattr(self.model.llm, "peft_config"):
                self.model.llm.save_pretrained(str(staging / LORA_FOLDER))
                if dtype is not None:  # PEFT writes the adapter as trained; store it in the requested dtype too
                    lora_file = staging / LORA_FOLDER / "adapter_model.safetensors"
                    lora = {k: v.to(dtype).contiguous() for k, v in load_file(str(lora_file)).items()}
                    save_file(lora, str(lora_file), metadata={"format": "pt"})
            (staging / TEMPLATE_FILE).write_text(self.tokenizer.chat_template)
            old = target.with_name(f".{target.name}-old-{os.getpid()}")
            if target.exists():
                os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # ---------------------------------------------------------------- chat

    def describe(self) -> dict[str, str]:
        """What is loaded: encoder, connector and LLM per modality, for status lines and logs."""
        llm = self.config.llm
        info = {"llm": llm.model + (f" + LoRA r={llm.lora.r}" if llm.lora.r else "") + f" ({resolve_mode(llm.serving, self.model.llm)} weights)"}
        for modality, encoder in self.model.encoders.items():
            info[f"{modality} encoder"] = encoder.description
            kind = self.config.modalities[modality].connector.kind
            if modality == "audio":
                rate = self.model.connectors["audio"].num_output_tokens(100 * encoder.frames_per_second) / 100
                info[f"{modality} connector"] = f"{kind} ({rate:g} tokens per second of audio)"
            else:
                info[f"{modality} connector"] = f"{kind} ({self.model.tokens_per_frame()[modality]} tokens)"
        return info

    def parse(self, messages: list[dict[str, Any]], cut_audio: bool = True) -> list[Message]:
        """Validate ``messages`` and load their media; changes no state.

        Args:
            cut_audio: Cut each turn's audio to ``media.audio_token_budget`` as the model sees it
                (off: whole clips, for tools such as transcription).
        """
        return validate_messages(
            filter_user_text(messages, self.text_filters), self.config.media, self.supported_media, self.frames_per_video, self.media_loaders(),
            audio_budget=self.audio_budget if cut_audio else None,
        )

    def media_loaders(self) -> dict[str, Any]:
        """Loaders for the media types beyond images and videos (audio, when an audio encoder is configured)."""
        return {"audio": lambda source: load_audio(source, self.config.media)} if "audio" in self.model.encoders else {}

    def prepare(self, messages: list[dict[str, Any]], max_new_tokens: int = 256, tools: list[Any] | None = None) -> Prompt:
        """Validate ``messages``, load their media and build the prompt (with ``tools`` on offer); changes no state."""
        parsed = self.parse(messages)
        budget = self.context_window - max_new_tokens
        if budget < 1:
            raise AssistantError(f"max_new_tokens={max_new_tokens} leaves no room in the {self.context_window}-token context")
        return self.prompt_builder.build_within(parsed, budget, tool_specs(tools))

    def chat(self, messages: list[dict[str, Any]], **options: Any) -> str:
        """The assistant's reply to ``messages`` (see ``stream`` for options)."""
        return "".join(self.stream(messages, **options))

    def stream(
        self,
        messages: list[dict[str, Any]],
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | str | None = None,
        seed: int | None = None,
        cancel: threading.Event | None = None,
        session: str | None = None,
        response_schema: dict[str, Any] | None = None,
    ) -> Iterator[str]:
        """Stream the reply as text pieces. Input is checked now; generation runs as you iterate.

        Args:
            messages: Conversation in the typed-content format, last message from the user (or a tool).
            max_new_tokens: Upper bound on generated tokens.
            temperature: 0 for greedy decoding, otherwise sampling temperature.
            top_p: Nucleus sampling mass (with temperature > 0).
            stop: Strings that end the reply (not included in it).
            seed: Makes sampling reproducible.
            cancel: Event that stops this request (only this one) when set, from any thread.
            session: Names the conversation's KV cache entry, so its next turn replaces rather than
                adds one. Optional: without it a turn still continues from the cached prefix it shares.
            response_schema: A JSON schema: the reply is decoded under it (each value bounded), so it parses.

        Raises:
            AssistantError: For bad messages, media, options or schema, before anything changes.
        """
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        options = SamplingOptions(max_new_tokens, temperature, top_p, stops, seed)
        prompt = self.prepare(messages, max_new_tokens)
        return self._run(prompt, options, _Request(cancel or threading.Event(), session), self._schema_constraint(response_schema))

    def stream_events(
        self,
        messages: list[dict[str, Any]],
        tools: list[Any] | None = None,
        tool_choice: Any = "auto",
        parallel_tool_calls: bool = True,
        cancel: threading.Event | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | str | None = None,
        seed: int | None = None,
        session: str | None = None,
        response_schema: dict[str, Any] | None = None,
    ) -> Iterator[Event]:
        """One assistant turn with ``tools`` on offer, as typed events; nothing runs.

        Yields ``TextDelta`` for reply text and ``ToolCallEvent`` for each call (call text never
        appears as reply text), then ``AssistantTurn`` with the message (``content`` and OpenAI-shaped
        ``tool_calls``) and its ``finish_reason``. With ``assistant.config.tools.constrained`` (the
        default) calls are decoded under a grammar built from the tools' JSON schemas, so they parse
        and validate.

        Args:
            messages: Conversation in the typed-content format (see ``stream``).
            tools: langchain tools, OpenAI function dicts or typed, documented functions.
            tool_choice: ``"auto"`` | ``"none"`` | ``"required"`` | a tool name | ``{"type": "function", "function": {"name"}}``;
                a named tool is called exactly once.
            parallel_tool_calls: Allow several calls in one turn.
            cancel: Event that stops this request when set (``cancel()`` stops every request).
            max_new_tokens, temperature, top_p, stop, seed, session, response_schema: As for ``stream`` (a
                schema goes without tools).

        Raises:
            AssistantError: For bad messages, tools, choices or options, before anything changes.
        """
        specs = tool_specs(tools)
        choice = parse_tool_choice(tool_choice, specs)
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        options = SamplingOptions(max_new_tokens, temperature, top_p, stops, seed)
        prompt = self.prepare(messages, max_new_tokens, specs)
        tool_format = self.prompt_builder.tool_format
        constraint = None
        if self.config.tools.constrained and specs:
            bounded = bounded_specs(specs, self.config.tools.max_string_chars, self.config.tools.max_array_items)  # no endless values
            tag = tool_format.structural_tag(bounded, choice, parallel_tool_calls)
            constraint = self._grammars.constraint(tag) if tag else None
        if response_schema is not None:
            if specs:
                raise AssistantError("a response_schema and tools cannot be offered together: the reply is either JSON or calls")
            constraint = self._schema_constraint(response_schema)
        request = _Request(cancel or threading.Event(), session)
        return self._events(prompt, options, request, constraint, CallStreamParser(tool_format))

    def run(
        self,
        messages: list[dict[str, Any]],
        tools: list[Any],
        tool_choice: Any = "auto",
        max_steps: int = 4,
        confirm: Confirm | None = None,
        **options: Any,
    ) -> list[dict[str, Any]]:
        """Run the tool loop and return the new messages (assistant turns and tool results, in order).

        See ``run_stream`` for the arguments.
        """
        new = []
        for event in self.run_stream(messages, tools, tool_choice, max_steps, confirm, **options):
            if isinstance(event, AssistantTurn):
                new.append(event.message)
            elif hasattr(event, "message"):
                new.append(event.message)
        return new

    def run_stream(
        self,
        messages: list[dict[str, Any]],
        tools: list[Any],
        tool_choice: Any = "auto",
        max_steps: int = 4,
        confirm: Confirm | None = None,
        **options: Any,
    ) -> Iterator[Event]:
        """Generate, run the calls the model makes, append their results, and generate again until an answer.

        Args:
            messages: Conversation in the typed-content format.
            tools: The tools that may run (langchain tools or typed, documented functions); only these run.
            tool_choice: For the first step, as in ``stream_events``; later steps use
                ``followup_tool_choice`` (an option, default ``"auto"``).
            max_steps: Rounds of tool calls allowed; calls beyond them get an error result and the
                model must then answer without tools.
            confirm: Called with each ``ToolCall`` of a tool whose policy ``requires_confirmation``;
                True runs it. Without a callback such calls are refused (as an error result).
            options: ``followup_tool_choice``, ``parallel_tool_calls``, ``cancel`` (an event that stops
                the exchange), ``direct_calls`` (``ToolCall``s the user made, run in place of the first
                step) and the sampling options of ``stream``.

        Yields:
            The events of each step (``TextDelta``, ``ToolCallEvent``, ``AssistantTurn``), then
            ``ToolConfirmation`` and ``ToolResult`` events for the calls, and so on.
        """
        return run_loop(self, messages, tools, tool_choice, max_steps=max_steps, confirm=confirm, **options)

    def cancel(self) -> None:
        """Stop every active request promptly (safe from any thread). To stop one, set its ``cancel`` event."""
        with self._lock:
            for request in self._active:
                request.cancel.set()

    def reset_cache(self, media: bool = False) -> None:
        """Forget the cached conversation (needed after the connector or LoRA changed).

        Args:
            media: Also drop cached encoder outputs. They never go stale (encoders are frozen),
                so this only frees memory.
        """
        self._engine.reset()
        if media:
            self._features.clear()

    # ---------------------------------------------------------------- internals

    @property
    def supported_media(self) -> tuple[str, ...]:
        """Content-part types this assistant accepts besides text (video needs the image encoder)."""
        media = tuple(self.model.encoders)
        return media + ("video",) if "image" in media else media

    def _events(
        self, prompt: Prompt, options: SamplingOptions, request: _Request, constraint: Any, parser: CallStreamParser
    ) -> Iterator[Event]:
        with closing(self._run(prompt, options, request, constraint)) as pieces:
            for piece in pieces:
                yield from parser.feed(piece)
        yield from parser.finish()
        message: dict[str, Any] = {"role": "assistant", "content": parser.text}
        if parser.calls:
            message["tool_calls"] = [call.to_openai() for call in parser.calls]
        reason = "tool_calls" if parser.calls and request.finish_reason == "stop" else request.finish_reason
        yield AssistantTurn(message, reason, len(prompt.input_ids), request.generated, list(parser.calls))

    def _run(self, prompt: Prompt, options: SamplingOptions, request: _Request, constraint: Any = None) -> Iterator[str]:
        with self._lock:
            self._active.add(request)
            self.stats.requests += 1
            self.stats.dropped_messages += prompt.dropped_messages
        started = time.perf_counter()
        first_token_at = None
        ids: list[int] = []
        emitted = 0
        holdback = max((len(s) for s in options.stop), default=1) - 1
        tokens = None
        try:
            tokens = self._engine.submit(
                prompt.position_keys(), lambda start: self._embed_suffix(prompt, start), options, request.cancel,
                self.config.prefix_reuse, constraint, request.session,
            )
            for token in tokens:
                if token in self._stop_ids:
                    break
                request.generated += 1
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                    self.stats.last_time_to_first_token_s = first_token_at - started
                ids.append(token)
                # A trailing U+FFFD is an incomplete UTF-8 sequence that the next token may complete.
                text = self.tokenizer.decode(ids, skip_special_tokens=True).rstrip("\ufffd")
                cut = min((i for i in (text.find(s) for s in options.stop) if i >= 0), default=-1)
                if cut >= 0:
                    if cut > emitted:
                        yield text[emitted:cut]
                    emitted = len(text)
                    return
                safe = len(text) - holdback
                if safe > emitted:
                    yield text[emitted:safe]
                    emitted = safe
            else:
                request.finish_reason = "cancelled" if request.cancel.is_set() else "length"
            text = self.tokenizer.decode(ids, skip_special_tokens=True).rstrip("\ufffd")
            if len(text) > emitted:
                yield text[emitted:]
        finally:
            if tokens is not None:
                tokens.close()
            if first_token_at is not None and len(ids) > 1:
                self.stats.last_tokens_per_second = (len(ids) - 1) / max(time.perf_counter() - first_token_at, 1e-9)
            with self._lock:
                self._active.discard(request)

    def _schema_constraint(self, schema: dict[str, Any] | None) -> Any:
        """The grammar of a reply that is one JSON value matching ``schema`` (None without one)."""
        limits = self.config.tools
        return None if schema is None else self._grammars.constraint(json_reply_tag(schema, limits.max_string_chars, limits.max_array_items))

    def _embed_suffix(self, prompt: Prompt, start: int) -> torch.Tensor:
        """Embeddings of ``prompt`` from position ``start`` on; encodes only frames not yet cached."""
        device = self.model.device
        input_ids = torch.tensor([prompt.input_ids[start:]], device=device)
        pieces: dict[str, list[torch.Tensor]] = {}
        for span in prompt.spans:
            end = span.start + span.length
            if end <= start:
                continue
            tokens = self._connected(span.modality, span.frame)  # (M, D)
            pieces.setdefault(span.modality, []).append(tokens[max(start - span.start, 0) :])
        media_tokens = {modality: torch.cat(parts) for modality, parts in pieces.items()}
        return self.model.embed(input_ids, media_tokens)  # (1, T - start, D)

    def encoded(self, modality: str, frame: Any) -> torch.Tensor:
        """The frozen encoder's (N, D_enc) tokens for one loaded frame, from the content-hash cache when seen before."""
        key = (modality, frame.key)
        features = self._features.get(key)
        if features is None:
            features = self.model.encoders[modality].encode_frame(frame)  # (N, D_enc)
            self.stats.encoder_calls += 1
            self._features.put(key, features)
        else:
            self.stats.media_cache_hits += 1
        return features

    def _connected(self, modality: str, frame) -> torch.Tensor:
        return self.model.connect(modality, self.encoded(modality, frame).unsqueeze(0))[0]  # (M, D_llm)


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple, set)) else [value]
