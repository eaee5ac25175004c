"""Run one step's tool calls safely and turn every outcome into a ``tool`` message.

For each call, in order: a call the model wrote badly, an unknown or schema-only tool, arguments that
fail the tool's JSON schema, or a denied confirmation becomes an error result without running
anything. The approved calls then run at once, each in its own daemon thread under its tool's
timeout (a hung tool is abandoned, never waited for); while they run, what a tool reports through
``ToolContext.report`` comes out as ``ToolProgress`` events. A tool's exception, timeout, oversized text or
unreadable media comes back as a ``tool`` message whose text starts with ``error:``; the conversation
goes on. This module knows nothing about prompts, tokens or the decode engine.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Iterator

import jsonschema

from assistant.config import MediaConfig
from assistant.errors import AssistantError
from assistant.media import load_image
from assistant.tools.calls import ToolCall
from assistant.tools.context import CONTEXT_ARGUMENT, ToolContext
from assistant.tools.events import ToolConfirmation, ToolProgress, ToolResult
from assistant.tools.spec import ToolSpec

logger = logging.getLogger(__name__)

Confirm = Callable[[ToolCall], bool]  # True approves the call
PROGRESS_POLL_S = 0.2  # how often a waiting runner passes on a running tool's progress


@dataclass
class _Running:
    call: ToolCall
    spec: ToolSpec
    started: float
    done: threading.Event = field(default_factory=threading.Event)
    output: Any = None
    error: BaseException | None = None
    progress: collections.deque = field(default_factory=collections.deque)  # (done, total, note) not yet passed on


class ToolRunner:
    """Runs calls against the tools offered for one request."""

    def __init__(
        self,
        specs: list[ToolSpec],
        limits: MediaConfig,
        context: ToolContext,
        confirm: Confirm | None = None,
        parallel: bool = True,
    ) -> None:
        self.specs = {spec.name: spec for spec in specs}
        self.limits = limits
        self.context = context
        self.confirm = confirm
        self.parallel = parallel
        self.media_budget: int | None = None  # media items the conversation may still take; set per round by the loop

    def run(self, calls: list[ToolCall]) -> Iterator[ToolConfirmation | ToolProgress | ToolResult]:
        """Yield a ``ToolConfirmation`` before asking for approval, ``ToolProgress`` while calls run, then one
        ``ToolResult`` per call, in call order."""
        results: dict[int, ToolResult] = {}
        approved: list[tuple[int, ToolCall, ToolSpec]] = []
        for index, call in enumerate(calls):
            spec, refusal = self._check(call)
            if refusal is None and spec.policy.requires_confirmation:
                yield ToolConfirmation(call)
                refusal = self._ask(call)
            if refusal is not None:
                results[index] = refused(call, refusal)
            else:
                approved.append((index, call, spec))
        batches = [approved] if self.parallel else [[item] for item in approved]
        for batch in batches:
            running = [(index, self._start(call, spec)) for index, call, spec in batch]
            for index, job in running:
                results[index] = yield from self._finish(job)
        for index in range(len(calls)):
            yield results[index]

    # ------------------------------------------------------------ checks before running

    def _check(self, call: ToolCall) -> tuple[ToolSpec | None, str | None]:
        if call.error:
            return None, call.error
        spec = self.specs.get(call.name)
        if spec is None:
            return None, f"unknown tool {call.name!r}; the tools on offer are {sorted(self.specs)}"
        if spec.tool is None:
            return spec, f"tool {call.name!r} is described but has no implementation to run here"
        try:
            jsonschema.validate(call.arguments, spec.parameters)
        except jsonschema.ValidationError as error:
            where = "/".join(str(step) for step in error.absolute_path) or "arguments"
            return spec, f"arguments for {call.name!r} do not match its schema at {where}: {error.message}"
        except jsonschema.SchemaError as error:
            return spec, f"tool {call.name!r} has an invalid argument schema: {error.message}"
        return spec, None

    def _ask(self, call: ToolCall) -> str | None:
        if self.confirm is None:
            return f"{call.name!r} needs confirmation and nobody was asked to approve it; it did not run"
        try:
            approved = bool(self.confirm(call))
        except Exception:  # a failing approver must not crash the conversation: treat as a denial
            logger.exception("confirmation callback failed for %s", call.name)
            approved = False
        return None if approved else f"the user denied running {call.name!r}; it did not run"

    # ------------------------------------------------------------ running

    def _start(self, call: ToolCall, spec: ToolSpec) -> _Running:
        job = _Running(call, spec, time.perf_counter())
        arguments = dict(call.arguments)
        if CONTEXT_ARGUMENT in spec.tool.get_input_schema().model_fields and CONTEXT_ARGUMENT not in spec.parameters.get("properties", {}):
            arguments[CONTEXT_ARGUMENT] = dataclasses.replace(
                self.context, progress=lambda done, total, note="": job.progress.append((done, total, note)))
        payload = {"type": "tool_call", "id": call.id, "name": call.name, "args": arguments}

        def work() -> None:
            try:
                tool = spec.tool
                if getattr(tool, "func", True) is None and getattr(tool, "coroutine", None) is not None:
                    job.output = asyncio.run(tool.ainvoke(payload))  # an async-only tool
                else:
                    job.output = tool.invoke(payload)
            except BaseException as error:  # reported to the model as an error result
                job.error = error
            finally:
                job.done.set()

        threading.Thread(target=work, name=f"tool-{call.name}", daemon=True).start()
        return job

    def _finish(self, job: _Running) -> Generator[ToolProgress, None, ToolResult]:
        timeout = job.spec.policy.timeout_s
        deadline = job.started + timeout
        while not job.done.wait(min(PROGRESS_POLL_S, max(0.0, deadline - time.perf_counter()))):
            yield from self._progress(job)
            if time.perf_counter() >= deadline:
                break
        yield from self._progress(job)
        if not job.done.is_set():
            logger.warning("tool %s did not finish within %.1f s; abandoned", job.call.name, timeout)
            return self._result(job.call, f"{job.call.name!r} did not finish within {timeout:g} s", False, job.started)
        if job.error is not None:
            logger.info("tool %s raised %s: %s", job.call.name, type(job.error).__name__, job.error)
            return self._result(job.call, f"{job.call.name!r} failed: {type(job.error).__name__}: {job.error}", False, job.started)
        if getattr(job.output, "status", "success") == "error":
            return self._result(job.call, f"{job.call.name!r} failed: {_text_of(job.output)}", False, job.started)
        text = _text_of(job.output)
        cap = job.spec.policy.max_output_chars
        if len(text) > cap:
            return self._result(job.call, f"{job.call.name!r} returned {len(text)} characters, over its cap of {cap}", False, job.started)
        try:
            media = self._media(getattr(job.output, "artifact", None))
        except AssistantError as error:
            return self._result(job.call, f"{job.call.name!r} returned media that cannot be used: {error}", False, job.started)
        if self.media_budget is not None and len(media) > self.media_budget:
            left_out = len(media) - max(self.media_budget, 0)
            media = media[: max(self.media_budget, 0)]
            text += (f"\n({left_out} more picture(s) not shown: the conversation may hold at most "
                     f"{self.limits.max_items_per_request} media items)")
        if self.media_budget is not None:
            self.media_budget -= len(media)
        return self._result(job.call, text, True, job.started, media)

    @staticmethod
    def _progress(job: _Running) -> Iterator[ToolProgress]:
        while job.progress:
            done, total, note = job.progress.popleft()
            yield ToolProgress(job.call, done, total, note)

    def _media(self, artifact: Any) -> list[dict[str, Any]]:
        """Media parts of a tool's artifact, each decoded and checked like a user's upload."""
        if artifact is None:
            return []
        if not isinstance(artifact, (list, tuple)):
            raise AssistantError("the artifact must be a list of content parts like {'type': 'image', 'image': ...}")
        parts = []
        for part in artifact:
            if not isinstance(part, dict) or part.get("type") != "image" or "image" not in part:
                raise AssistantError(f"artifact part {str(part)[:80]!r} is not an {{'type': 'image', 'image': ...}} part")
            frame = load_image(part["image"], self.limits).frames[0]
            parts.append({"type": "image", "image": frame.image})
        return parts

    @staticmethod
    def _result(call: ToolCall, text: str, ok: bool, started: float, media: list[dict[str, Any]] | None = None) -> ToolResult:
        content = [{"type": "text", "text": text if ok else f"error: {text}"}] + (media or [])
        message = {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": content}
        return ToolResult(call, message, ok, time.perf_counter() - started)


def _text_of(output: Any) -> str:
    """The text of a ``ToolMessage`` (or any return value)."""
    content = getattr(output, "content", output)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(block if isinstance(block, str) else str(block.get("text", "")) for block in content if isinstance(block, (str, dict)))
    try:
        return json.dumps(content, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(content)


def refused(call: ToolCall, reason: str) -> ToolResult:
    """The error result for a call that did not run."""
    return ToolRunner._result(call, reason, False, time.perf_counter())
