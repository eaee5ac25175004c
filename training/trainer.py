"""The training loop: validate data, check the template contract, train, evaluate, checkpoint, save.

Devices, DDP/FSDP and mixed precision come from ``accelerate`` (run the same script under
``accelerate launch`` or ``torchrun``). What trains is decided by ``assistant.freeze`` alone. Frozen
encoder outputs are cached by content hash, so each training image is encoded once per process.
Nothing that outlives a step is allocated in between its activations (the previous loss and its
graph, the optimizer's state): on CPU that would fragment glibc's heap and raise peak RSS.
The loop knows nothing about the data formats (``training.data``) or the metric's internals.
"""

from __future__ import annotations

import json
import logging
import resource
import time
import zlib
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from assistant import Assistant
from assistant.feature_cache import FeatureCache
from assistant.freeze import apply_freeze_policy
from assistant.llm import attach_lora
from assistant.processor import PromptBuilder
from training.checkpoint import TrainerState, list_checkpoints, load_checkpoint, save_checkpoint, trainable_state
from training.audio_alignment import ctc_alignment_loss
from training.config import TrainConfig
from training.contract import check_template_contract
from training.data.examples import ConversationDataset, check_row, collate
from training.data.rows import BadRow, Row, RowReport, load_rows, summarise
from training.evaluation import evaluate
from training.grounding import (
    answer_words, grounded_alignment_loss, lexical_alignment_loss, rescale_output, single_picture_words,
)
from training.sampler import ResumableBatchSampler

logger = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training stopped on purpose: too many bad rows, a broken contract or a non-finite loss."""


def build_assistant(config: TrainConfig) -> Assistant:
    """The assistant to train: from ``base`` if given, else fresh from ``config.model``."""
    if config.base:
        assistant = Assistant.from_pretrained(config.base, serving="eager")  # LoRA unmerged, full precision: trainable
        lora = config.model.llm.lora
        if config.stage == "instruct" and lora.r and not hasattr(assistant.model.llm, "peft_config"):
            assistant.model.llm = attach_lora(assistant.model.llm, lora)
            assistant.config.llm.lora = lora
        return assistant
    if config.model.llm.serving != "eager":
        raise TrainingError(f"model.llm.serving is {config.model.llm.serving!r}: a serving copy cannot be trained; use 'eager'")
    return Assistant.from_config(config.model, seed=config.optim.seed)


def validate_rows(
    assistant: Assistant, builder: PromptBuilder, rows: list[Row], report: RowReport, max_length: int, show: bool
) -> tuple[list[Row], list[int]]:
    """The rows that pass every check, and their token lengths; bad rows go to ``report``."""
    valid, lengths = [], []
    for row in tqdm(rows, desc="checking rows", disable=not show):
        try:
            lengths.append(check_row(assistant, builder, row, max_length))
            valid.append(row)
        except BadRow as error:
            report.add(row.id, error)
    return valid, lengths


def allocate_adam_state(optimizer: torch.optim.Optimizer) -> bool:
    """Create Adam/AdamW's moment buffers now, as the zeros its first ``step`` would; True if it did.

    Created lazily, the ~500 small buffers (built-in model) land in between the first step's freed
    activations and stay for the whole run, splitting that space: ~40 MB more peak RSS on CPU. Made
    before the first forward they sit with the model. Training is unchanged; an optimizer that already
    has state (resumed) and other optimizers are left alone.
    """
    if not isinstance(optimizer, torch.optim.Adam) or optimizer.state:  # AdamW subclasses Adam
        return False
    saved = optimizer.state_dict()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for group in saved["param_groups"]:
        for index in group["params"]:
            moments = {"exp_avg": torch.zeros_like(params[index]), "exp_avg_sq": torch.zeros_like(params[index])}
            if group["amsgrad"]:
                moments["max_exp_avg_sq"] = torch.zeros_like(params[index])
            saved["state"][index] = {"step": 0.0, **moments}  # a float step: Adam turns it into the tensor it uses
    optimizer.load_state_dict(saved)
    return True


class Trainer:
    def __init__(self, config: TrainConfig) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, set_seed

        self.config = config
        precision = config.optim.mixed_precision
        if precision == "auto":
            precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
        # accelerate keeps one mixed-precision setting per process; a later Trainer in the same process
        # (the recipe's stages, a notebook) may want another. The process group itself is kept.
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state()
        # Text-only batches leave the connector unused: DDP must not wait for its gradients.
        self.accelerator = Accelerator(
            cpu=not torch.cuda.is_available(),  # also what turns torchrun's processes into a gloo group on CPU
            mixed_precision=precision, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)]
        )
        set_seed(config.optim.seed)
        self.assistant = build_assistant(config)
        self.model = self.assistant.model
        if config.optim.gradient_checkpointing:
            self.model.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.trainable = apply_freeze_policy(self.model, train_connectors=True, train_lora=config.stage == "instruct")
        served = self.assistant.config
        self.builder = PromptBuilder(self.assistant.tokenizer, self.model.media_tokens, served.system_prompt, served.tools.format)
        self.features = FeatureCache(self.config.data.feature_cache_mb)
        self.output = Path(config.output_dir)
        self.is_main = self.accelerator.is_main_process
        self.media_rms = 0.0  # RMS of the last lexical-alignment batch's media tokens (``_rescale_connector``)
        self.audio_rms = 0.0  # the same for audio tokens (CTC alignment)
        self._word_cache: dict[str, list[int]] = {}
        self._grid_logged = False

    @property
    def _lexical(self) -> bool:
        """Lexical alignment (``training.grounding``): the LLM is not run, so row length does not matter
        and batches are not grouped by it (grouped, each batch held one kind of row; see
        ``single_picture_words`` for the spread measured with and without)."""
        return self.config.stage == "align" and self.config.align.objective == "lexical"

    def _word_ids(self, text: str) -> list[int]:
        """Token ids of `` text`` (leading space: the form words take inside a sentence), specials left out."""
        if text not in self._word_cache:
            special = set(self.assistant.tokenizer.all_special_ids)
            ids = self.assistant.tokenizer(" " + text, add_special_tokens=False)["input_ids"]
            self._word_cache[text] = [i for i in ids if i not in special]
            if not self._word_cache[text]:
                logger.warning("region text %r has no non-special tokens; its regions are left out", text)
        return self._word_cache[text]

    def _token_grid(self) -> int | None:
        """The side of the image encoder's grid when the connector's cells are its cells, else None."""
        connector, encoder = self.model.connectors["image"], self.model.encoders["image"]
        grid = encoder.grid
        kept = getattr(connector, "keeps_grid", False) and grid and grid * grid == encoder.num_tokens
        if getattr(connector, "select_cells", 0) and not kept:
            raise TrainingError(
                "connector select_cells needs an encoder whose tokens form a grid (its objectness scores are "
                "trained on each box's centre cell); this encoder's do not (e.g. it centre-crops): set select_cells 0"
            )
        if not self._grid_logged:
            self._grid_logged = True
            logger.info(
                "grounded rows: %s", f"the tokens of each box's centre cell ({grid}x{grid} grid)" if kept
                else "boxes matched to tokens one to one (the connector does not keep the encoder's grid)",
            )
        return grid if kept else None

    # ------------------------------------------------------------------ data

    def load_data(self) -> tuple[list[Row], list[int], list[Row]]:
        data = self.config.data
        if not data.train_file:
            raise TrainingError("data.train_file is not set")
        try:
            rows, report = load_rows(data.train_file, data.data_root)
            val_rows, val_report = load_rows(data.val_file, data.data_root or Path(data.train_file).parent) if data.val_file else ([], RowReport())
        except (FileNotFoundError, ValueError) as error:
            raise TrainingError(str(error)) from None
        rows, lengths = validate_rows(self.assistant, self.builder, rows, report, data.max_length, self.is_main)
        val_rows, _ = validate_rows(self.assistant, self.builder, val_rows, val_report, data.max_length, self.is_main)
        if self.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
            (self.output / "data_report.json").write_text(json.dumps({"train": report.to_dict(), "val": val_report.to_dict()}, indent=1))
        logger.info("train data: %s", summarise(report))
        if report.bad_fraction > data.max_bad_fraction:
            raise TrainingError(
                f"{summarise(report)}: {report.bad_fraction:.1%} is over data.max_bad_fraction="
                f"{data.max_bad_fraction:.1%}; see {self.output / 'data_report.json'}"
            )
        if not rows:
            raise TrainingError("no valid training rows")
        return rows, lengths, val_rows

    # ------------------------------------------------------------------ steps

    def _encoder_features(self, batch: dict[str, Any]) -> dict[str, Any] | None:
        """Frozen-encoder outputs of the batch's pictures (stacked) and audio clips (a list: lengths differ)."""
        features: dict[str, Any] = {}
        frames, clips = batch["frames"], batch.get("clips", [])
        # float32 as at inference: the frozen encoders stay out of the loss's mixed-precision autocast.
        with torch.autocast(self.accelerator.device.type, enabled=False):
            if frames:
                encoder = self.model.encoders["image"]
                found = {frame.key: self.features.get(frame.key) for frame in frames}
                missing = {frame.key: frame for frame in frames if found[frame.key] is None}
                if missing:
                    encoded = encoder.encode([frame.image for frame in missing.values()])  # (K, N, D)
                    for key, tensor in zip(missing, encoded):
                        found[key] = tensor.clone()  # its own storage, so evicting it frees it
                        self.features.put(key, found[key])
                features["image"] = torch.stack([found[frame.key] for frame in frames])
            if clips:
                encoded_clips = []
                for clip in clips:
                    tensor = self.features.get(("audio", clip.key))
                    if tensor is None:
                        tensor = self.model.encoders["audio"].encode_frame(clip)  # (N_k, D)
                        self.features.put(("audio", clip.key), tensor)
                    encoded_clips.append(tensor)
                features["audio"] = encoded_clips
        return features or None

    def _loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        if self._lexical:
            return self._lexical_loss(model, batch)
        device = self.accelerator.device
        outputs = model(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            labels=batch["labels"].to(device),
            encoder_features=self._encoder_features(batch),
        )
        return outputs.loss

    def _lexical_loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """``training.grounding``: answer words scored against the media tokens, the LLM not run."""
        device = self.accelerator.device
        cells = model(
            input_ids=batch["input_ids"].to(device), encoder_features=self._encoder_features(batch),
            media_tokens_only=True, all_cells=True,
        )
        align, embeddings = self.config.align, self.model.llm.get_input_embeddings().weight
        losses = []
        if "image" in cells:
            tokens, objectness = cells["image"]  # (F, N, S, D), (F, N) or None
            per_frame = tokens.shape[1] * tokens.shape[2]
            self.media_rms = float(tokens.detach().float().pow(2).mean().sqrt())
            regions = [(frame, self._word_ids(region.text), region.centre) for frame, region in batch["regions"]]
            regions = [region for region in regions if region[1]]  # text that tokenised to nothing: warned once
            grid = self._token_grid()
            grounded = grounded_alignment_loss(
                tokens if grid else tokens.flatten(1, 2), regions, self._word_ids(align.background), embeddings,
                align.negatives, align.logit_scale, grid, objectness if grid else None, align.background_cells,
            )
            # Rows with regions are taught by them alone; the others by their answer words.
            starts = torch.tensor([0, *batch["frames_per_row"]]).cumsum(0).tolist()
            named = {frame for frame, _, _ in regions}
            words = single_picture_words(
                answer_words(batch["labels"].to(device), self.assistant.tokenizer.all_special_ids), batch["frames_per_row"]
            )
            words = [ids[:0] if named & set(range(starts[row], starts[row + 1])) else ids for row, ids in enumerate(words)]
            lexical = lexical_alignment_loss(
                tokens.flatten(0, 2), [count * per_frame for count in batch["frames_per_row"]], words,
                embeddings, align.negatives, align.logit_scale,
            )
            losses = [term for term in (grounded, lexical) if term is not None]
        if "audio" in cells:
            said = [(tokens, self._word_ids(text)) for tokens, text in zip(cells["audio"], batch["transcripts"]) if text]
            blank = self._word_ids(align.background)[0]
            if said:
                self.audio_rms = float(torch.cat([tokens for tokens, _ in said]).detach().float().pow(2).mean().sqrt())
                ctc = ctc_alignment_loss(
                    [tokens for tokens, _ in said], [[i for i in ids if i != blank] for _, ids in said], embeddings,
                    blank, align.negatives, align.logit_scale,
                )
                if ctc is not None:
                    losses.append(ctc)
        loss = sum(losses) if losses else None
        if loss is None:  # no row with both media and words: a zero that still reaches every trained weight (DDP)
            loss = sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0
        return loss

    def _forward_backward(self, model: torch.nn.Module, batch: dict[str, Any], step: int, sync: bool) -> float:
        """Loss and gradients of one micro-batch (added to ``.grad``, scaled by 1/grad_accum); returns the loss.

        The loss tensor must not outlive this call: it holds its autograd graph, ~3700 small nodes with
        the built-in model, allocated in between the forward's activations. Alive into the next forward
        (as a loop variable is), they split the space the freed activations left, and on CPU glibc grew
        its heap instead of reusing it: +250 MB peak RSS and extra page faults in the first steps.
        """
        accelerator = self.accelerator
        with nullcontext() if sync else accelerator.no_sync(model):
            with accelerator.autocast():
                loss = self._loss(model, batch)
            if not bool(accelerator.reduce(torch.isfinite(loss.detach()).float(), "min")):
                last = list_checkpoints(self.config.checkpoint_dir)
                raise TrainingError(f"non-finite loss at step {step}; last good checkpoint: {last[-1] if last else 'none'}")
            accelerator.backward(loss / self.config.optim.grad_accum)
        return loss.item()

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Connector weights (optionally at their own learning rate, as LLaVA's projector) and LoRA weights."""
        optim = self.config.optim
        connector = [p for p in self.model.connectors.parameters() if p.requires_grad]
        connector_ids = {id(p) for p in connector}
        others = [p for p in self.model.parameters() if p.requires_grad and id(p) not in connector_ids]
        connector_lr = optim.connector_learning_rate or optim.learning_rate
        groups = [{"params": connector, "lr": connector_lr}, {"params": others, "lr": optim.learning_rate}]
        return [group for group in groups if group["params"]]

    def train(self) -> dict[str, Any]:
        config, accelerator = self.config, self.accelerator
        rows, lengths, val_rows = self.load_data()
        checked = check_template_contract(self.assistant, self.builder, rows[: config.eval.contract_rows])
        logger.info("template contract holds on %d prompts", checked)

        optimizer = torch.optim.AdamW(self.parameter_groups(), lr=config.optim.learning_rate, weight_decay=config.optim.weight_decay)
        from transformers import get_cosine_schedule_with_warmup

        scheduler = get_cosine_schedule_with_warmup(optimizer, config.optim.warmup_steps, config.optim.max_steps)
        state = TrainerState()
        if config.resume:
            found = list_checkpoints(config.checkpoint_dir)
            if found:
                state = load_checkpoint(found[-1], self.model, optimizer, scheduler)
                logger.info("resumed from %s at step %d", found[-1].name, state.step)
            else:
                logger.warning("--resume given but no checkpoint in %s: starting fresh", config.checkpoint_dir)
        allocate_adam_state(optimizer)
        model, optimizer = accelerator.prepare(self.model, optimizer)

        accum = config.optim.grad_accum
        dataset = ConversationDataset(self.assistant, self.builder, rows, config.data.modality_dropout, config.optim.seed)
        sampler = ResumableBatchSampler(
            len(rows), config.optim.batch_size, config.optim.seed, accelerator.process_index,
            accelerator.num_processes, state.micro_step, config.optim.max_steps * accum,
            lengths if config.data.group_by_length and not self._lexical else None,
        )
        pad_id = self.assistant.tokenizer.pad_token_id
        pad_id = self.assistant.tokenizer.eos_token_id if pad_id is None else pad_id
        # Its own generator: creating the iterator must not draw from the global RNG a resume restores.
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=sampler, collate_fn=lambda b: collate(b, pad_id),
            num_workers=config.data.num_workers, generator=torch.Generator().manual_seed(config.optim.seed),
        )
        batches = iter(loader)
        writer = self._writer()
        metrics: dict[str, float] = {}
        self.loss_history: list[float] = []
        self.paused_s = 0.0  # time in evaluation and checkpointing, excluded from samples/s
        started, start_step = time.perf_counter(), state.step
        model.train()
        progress = tqdm(total=config.optim.max_steps, initial=state.step, desc=f"{config.stage}", disable=not self.is_main)
        while state.step < config.optim.max_steps:
            total = 0.0
            for micro in range(accum):
                batch = next(batches)
                # Gradients are all-reduced only on the last micro-batch of a step.
                total += self._forward_backward(model, batch, state.step + 1, sync=micro == accum - 1) / accum
                state.micro_step += 1
                state.samples += batch["input_ids"].shape[0] * accelerator.num_processes
            if config.optim.max_grad_norm > 0:
                accelerator.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], config.optim.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.last_loss = float(accelerator.reduce(torch.tensor(total, device=accelerator.device), "mean"))
            self.loss_history.append(state.last_loss)
            progress.update(1)
            progress.set_postfix(loss=f"{state.last_loss:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            if writer:
                writer.add_scalar("train/loss", state.last_loss, state.step)
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], state.step)
            if self._due(config.checkpoint.save_every, state.step):
                self._checkpoint(state, optimizer, scheduler)
            if self._due(config.eval.eval_every, state.step) and val_rows:
                metrics = self._evaluate(model, val_rows, writer, state.step)
        progress.close()
        elapsed = time.perf_counter() - started - self.paused_s
        if self._lexical:
            self._rescale_connector()
        return self._finish(state, optimizer, scheduler, metrics, elapsed, start_step, writer)

    # ------------------------------------------------------------------ helpers

    def _rescale_connector(self) -> None:
        """After lexical alignment: tokens back at the LLM's embedding RMS (``training.grounding``)."""
        target = float(self.model.llm.get_input_embeddings().weight.detach().float().pow(2).mean().sqrt())
        for modality, rms in (("image", self.media_rms), ("audio", self.audio_rms)):
            if modality not in self.model.connectors:
                continue
            measured = float(self.accelerator.reduce(torch.tensor(rms, device=self.accelerator.device), "mean"))
            if rescale_output(self.model.connectors[modality], measured, target):
                logger.info("%s connector tokens rescaled from RMS %.4f to the embeddings' %.4f", modality, measured, target)

    def _due(self, every: int, step: int) -> bool:
        return step == self.config.optim.max_steps or (every > 0 and step % every == 0)

    def _writer(self):
        if not self.is_main:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.output / "tensorboard"))

    def _checkpoint(self, state: TrainerState, optimizer, scheduler) -> None:
        paused = time.perf_counter()
        self.accelerator.wait_for_everyone()
        if self.is_main:
            save_checkpoint(self.config.checkpoint_dir, state, self.model, optimizer, scheduler, self.config.checkpoint.keep_last)
        self.accelerator.wait_for_everyone()
        self.paused_s += time.perf_counter() - paused

    def _evaluate(self, model, val_rows: list[Row], writer, step: int) -> dict[str, float]:
        paused = time.perf_counter()
        self.accelerator.wait_for_everyone()
        metrics: dict[str, float] = {}
        if self.is_main:
            model.eval()
            metrics = evaluate(self.assistant, self.builder, val_rows[: self.config.eval.max_samples], self.config.eval, self._loss, self.config.optim.batch_size)
            model.train()
            logger.info("step %d eval: %s", step, {k: round(v, 4) for k, v in metrics.items()})
            if writer:
                for name, value in metrics.items():
                    writer.add_scalar(f"eval/{name}", value, step)
        self.accelerator.wait_for_everyone()
        self.paused_s += time.perf_counter() - paused
        return metrics

    def _finish(self, state, optimizer, scheduler, metrics, elapsed, start_step, writer) -> dict[str, Any]:
        accelerator = self.accelerator
        checksum = zlib.crc32(b"".join(t.float().numpy().tobytes() for t in trainable_state(self.model).values()))
        checksums = accelerator.gather(torch.tensor([checksum], dtype=torch.long, device=accelerator.device)).tolist()
        if self.is_main:
            dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[self.config.checkpoint.save_dtype]
            self.assistant.reset_cache()
            self.assistant.save_pretrained(self.config.adapter_dir, dtype=dtype)
        steps_run = state.step - start_step
        micro_batches = steps_run * self.config.optim.grad_accum
        summary = {
            "stage": self.config.stage,
            "steps": state.step,
            "samples": state.samples,
            "processes": accelerator.num_processes,
            "train_time_s": round(elapsed, 2),
            "samples_per_s": round(micro_batches * self.config.optim.batch_size * accelerator.num_processes / max(elapsed, 1e-9), 3),
            "peak_memory_mb": round(_peak_memory_mb(), 1),
            "final_train_loss": state.last_loss,
            "trainable_parameters": self.trainable,
            "metrics": metrics,
            "rank_weight_checksums": checksums,
            "adapter": str(self.config.adapter_dir),
        }
        if self.is_main:
            (self.output / "summary.json").write_text(json.dumps(summary, indent=2))
            if writer:
                writer.close()
            logger.info("done: %s", json.dumps(summary))
        accelerator.wait_for_everyone()
        return summary


def _peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
