"""Training speed and memory: our ``training.trainer.Trainer`` vs a plain ``transformers.Trainer`` + peft.

Both sides train the same ``MultimodalModel`` (``Assistant.from_config`` with the same seed, so the same
fresh connector and LoRA weights; ``assistant.freeze.apply_freeze_policy`` decides what trains) on the
same valid rows of a generated scene dataset, with the same AdamW (``torch.optim.AdamW``), learning rate,
cosine schedule, warm-up, clipping and precision (fp32). By default the baseline is fed exactly ours'
batches (ours' sampler, length-grouped when ``data.group_by_length``); ``--baseline-order shuffled`` gives it
the same sampler without length grouping, to show what the grouping is worth.

What deliberately differs is the design under test:

* ours caches frozen-encoder outputs by media content hash (float32 in RAM), so a picture is
  encoded once per process; the baseline's collator preprocesses pixels and the frozen encoder runs
  on every batch inside ``MultimodalModel.forward(pixel_values=...)``, the plain way;
* ours runs through ``accelerate`` directly with its own loop; the baseline is ``transformers.Trainer``
  with ``logging_steps=1`` (ours reads the loss every step too).

Each trainer runs in its own subprocess so peak RSS (``ru_maxrss``) is per trainer; both are launched
from one invocation, alternating which goes first when ``--repeats`` > 1, and medians are reported.
Throughput is timed identically for both by a global ``torch.optim`` step post-hook: samples/s
over the optimizer steps after the first ``--skip-steps`` (model loading, row validation and the
first steps are excluded). Each trainer's own whole-loop figure is shown as well (ours:
``summary["samples_per_s"]``; transformers: ``metrics["train_samples_per_second"]``).

    python benchmarks/bench_train.py                 # the real built-in defaults (slow on CPU)
    python benchmarks/bench_train.py --tiny          # tiny random models: a quick smoke test
    python benchmarks/bench_train.py --steps 12 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere: the repo's packages come first
    sys.path.insert(0, str(REPO))

logger = logging.getLogger("bench_train")

RUNNERS = ("ours", "transformers")


# ---------------------------------------------------------------------------- measurement (children)


class StepClock:
    """Timestamps every optimizer step of every optimizer in the process (a global torch hook)."""

    def __init__(self) -> None:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.times: list[float] = []
        self._handle = register_optimizer_step_post_hook(lambda optimizer, args, kwargs: self.times.append(time.perf_counter()))

    def measure(self, skip: int, samples_per_step: int) -> dict[str, Any]:
        """Samples/s, seconds and the median step time over the steps after the first ``skip`` (>= 1)."""
        if len(self.times) <= skip:
            raise RuntimeError(f"only {len(self.times)} optimizer steps ran; need more than --skip-steps={skip}")
        seconds = self.times[-1] - self.times[skip - 1]
        steps = [later - earlier for earlier, later in zip(self.times[skip - 1 :], self.times[skip:])]
        return {
            "samples_per_s": (len(self.times) - skip) * samples_per_step / seconds, "timed_s": seconds,
            "timed_steps": len(steps), "median_step_s": statistics.median(steps),
            "step_s": [round(later - earlier, 4) for earlier, later in zip(self.times, self.times[1:])],  # from step 2 on
        }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_ours(config_path: str, skip: int) -> dict[str, Any]:
    from training.config import load_train_config
    from training.trainer import Trainer

    clock = StepClock()
    config = load_train_config(["--config", config_path])
    trainer = Trainer(config)
    loaded_rss = peak_rss_mb()
    summary = trainer.train()  # validates rows and checks the template contract before its loop
    return {
        **clock.measure(skip, config.optim.batch_size * config.optim.grad_accum),
        "own_samples_per_s": summary["samples_per_s"], "own_train_time_s": summary["train_time_s"],
        "steps": summary["steps"], "samples": summary["samples"],
        "peak_rss_mb": peak_rss_mb(), "loaded_rss_mb": loaded_rss,
        "first_loss": trainer.loss_history[0], "last_loss": trainer.loss_history[-1],
        "cached_frames": len(trainer.features),
    }


def run_transformers(config_path: str, skip: int, workdir: str, order: str) -> dict[str, Any]:
    """The plain way: an HF ``Trainer`` on the same model, pixels through the frozen encoder every batch.

    ``order`` "same": exactly ours' batches; "shuffled": ours' sampler without length grouping (a plain
    shuffled order, the data a default run would see), same rows per epoch.
    """
    import torch
    from transformers import Trainer as HFTrainer
    from transformers import TrainerCallback, TrainingArguments

    from assistant import Assistant
    from assistant.freeze import apply_freeze_policy
    from training.config import load_train_config
    from training.data.examples import check_row, collate, encode_conversation, parse_messages
    from training.data.rows import BadRow, load_rows
    from training.sampler import ResumableBatchSampler

    clock = StepClock()
    config = load_train_config(["--config", config_path])
    optim = config.optim
    if config.data.modality_dropout or config.base or optim.mixed_precision not in ("no", "auto"):
        raise SystemExit("the baseline supports only fresh fp32 runs without modality dropout")
    torch.manual_seed(optim.seed)
    assistant = Assistant.from_config(config.model, seed=optim.seed)  # what ours builds: same fresh weights
    model = assistant.model
    apply_freeze_policy(model, train_connectors=True, train_lora=config.stage == "instruct")
    builder = assistant.prompt_builder
    loaded_rss = peak_rss_mb()  # like ours: before rows are read and validated

    rows, _ = load_rows(config.data.train_file, config.data.data_root)
    valid, lengths = [], []
    for row in rows:  # the same check, hence the same valid rows and lengths, as ours
        try:
            lengths.append(check_row(assistant, builder, row, config.data.max_length))
            valid.append(row)
        except BadRow:
            pass

    def batches(grouped: bool) -> list[list[int]]:  # ours' sampler is a pure function of the seed (and lengths)
        sampler = ResumableBatchSampler(
            len(valid), optim.batch_size, optim.seed, 0, 1, 0, optim.max_steps * optim.grad_accum, lengths if grouped else None
        )
        return [[index for _, index in batch] for batch in sampler]

    ours_batches = batches(config.data.group_by_length)
    baseline_batches = ours_batches if order == "same" else batches(False)
    ordered = [valid[index] for batch in baseline_batches for index in batch]

    class Rows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(ordered)

        def __getitem__(self, index: int):
            return encode_conversation(builder, parse_messages(assistant, ordered[index].messages))

    encoder = model.encoders["image"]
    pad_id = assistant.tokenizer.pad_token_id
    pad_id = assistant.tokenizer.eos_token_id if pad_id is None else pad_id
    collated = {"rows": 0}

    def collate_pixels(examples) -> dict[str, Any]:
        batch = collate(examples, pad_id)  # the same padding as ours
        images = [frame.image for frame in batch.pop("frames")]
        if images:
            batch["pixel_values"] = {"image": encoder.preprocess(images)}  # (K, 3, H, W)
        collated["rows"] += len(examples)
        return batch

    losses: list[float] = []

    class LossLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    arguments = TrainingArguments(
        output_dir=workdir, per_device_train_batch_size=optim.batch_size, gradient_accumulation_steps=optim.grad_accum,
        max_steps=optim.max_steps, learning_rate=optim.learning_rate, weight_decay=optim.weight_decay,
        lr_scheduler_type="cosine", warmup_steps=optim.warmup_steps, max_grad_norm=optim.max_grad_norm,
        optim="adamw_torch", seed=optim.seed, train_sampling_strategy="sequential", logging_steps=1,
        report_to=[], save_strategy="no", use_cpu=True, dataloader_num_workers=0, dataloader_pin_memory=False,
        remove_unused_columns=False,
    )
    # The forward's **llm_kwargs would make HF pass num_items_in_batch and then skip dividing the loss by
    # grad_accum; the model returns a mean loss, so say it takes no loss kwargs (ours divides by grad_accum).
    model.accepts_loss_kwargs = False
    trainer = HFTrainer(model=model, args=arguments, train_dataset=Rows(), data_collator=collate_pixels, callbacks=[LossLog()])
    metrics = trainer.train().metrics
    return {
        **clock.measure(skip, optim.batch_size * optim.grad_accum),
        "own_samples_per_s": metrics["train_samples_per_second"], "own_train_time_s": metrics["train_runtime"],
        "steps": trainer.state.global_step, "samples": collated["rows"],
        "peak_rss_mb": peak_rss_mb(), "loaded_rss_mb": loaded_rss,
        "first_loss": losses[0] if losses else float("nan"), "last_loss": losses[-1] if losses else float("nan"),
        "data": {
            "ours": batch_stats(ours_batches, valid, lengths), "transformers": batch_stats(baseline_batches, valid, lengths)
        },
        "ours_grouped_by_length": config.data.group_by_length, "baseline_order": order,
    }


def batch_stats(batches: list[list[int]], rows: list, lengths: list[int]) -> dict[str, int]:
    """Image frames (all and distinct) and tokens (real and padded) in a run's batches."""
    images = [json.dumps(part, sort_keys=True) for batch in batches for index in batch for message in rows[index].messages
              if isinstance(message.get("content"), list) for part in message["content"] if part.get("type") == "image"]
    return {
        "frames": len(images), "unique_frames": len(set(images)),
        "tokens": sum(lengths[index] for batch in batches for index in batch),
        "padded_tokens": sum(len(batch) * max(lengths[index] for index in batch) for batch in batches),
    }


def child_main(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child == "ours":
        result = run_ours(args.config, args.skip_steps)
    else:
        result = run_transformers(args.config, args.skip_steps, str(Path(args.config).parent / "hf-output"), args.baseline_order)
    result.update(runner=args.child, torch_threads=torch.get_num_threads())
    print(json.dumps(result), flush=True)  # the last stdout line is the parent's input


# ---------------------------------------------------------------------------- orchestration (parent)


def tiny_models(folder: Path) -> dict[str, Any]:
    """The tests' tiny random LLM (real BPE tokenizer, ChatML) and tiny CLIP tower, as a model section."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import _make_llm, _make_vision

    _make_llm(folder / "llm")
    _make_vision(folder / "clip", "clip")
    return {
        "llm": {"model": str(folder / "llm")},
        "modalities": {"image": {"encoder": {"kind": "hf_vision", "model": str(folder / "clip")}, "connector": {"kind": "mlp"}}},
    }


def write_run_config(folder: Path, model: dict[str, Any], train_file: Path, args: argparse.Namespace) -> Path:
    """One TrainConfig YAML read by both children: the single source of every shared setting."""
    import yaml

    model = json.loads(json.dumps(model))
    model.setdefault("llm", {})["lora"] = {"r": args.lora_r, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    config = {
        "output_dir": str(folder / "run"),
        "stage": "instruct",
        "model": model,
        "data": {"train_file": str(train_file), "max_length": args.max_length, "max_bad_fraction": args.max_bad_fraction},
        "optim": {
            "max_steps": args.steps, "batch_size": args.batch_size, "grad_accum": args.grad_accum,
            "warmup_steps": args.lr_warmup, "learning_rate": args.learning_rate, "seed": args.seed, "mixed_precision": "no",
        },
        "checkpoint": {"save_every": 0},
        "eval": {"eval_every": 0, "metric": "none"},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def launch(runner: str, config: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", runner, "--config", str(config),
               "--skip-steps", str(args.skip_steps), "--threads", str(args.threads), "--baseline-order", args.baseline_order]
    environment = dict(os.environ)
    if args.mmap_threshold:  # a fixed threshold turns off glibc's dynamic one: large frees go back to the OS
        environment["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
    log = config.parent / f"{runner}.log"
    started = time.perf_counter()
    with open(log, "w") as stderr:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=REPO, env=environment)
    if done.returncode:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"{runner} failed (exit {done.returncode}); end of {log}:\n{tail}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    logger.info("%s: %.3f samples/s, peak RSS %.0f MB (process took %.0f s)", runner, result["samples_per_s"],
                result["peak_rss_mb"], time.perf_counter() - started)
    return result


def median(results: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in results)


def report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace, model_name: str, load: list[float]) -> None:
    ours, theirs = results["ours"], results["transformers"]
    per_step = args.batch_size * args.grad_accum
    lines = [
        "",
        f"Training benchmark: {model_name}; LoRA r={args.lora_r} on q/k/v/o, stage instruct, fp32, "
        f"batch {args.batch_size} x grad_accum {args.grad_accum}, {args.steps} optimizer steps, "
        f"{args.repeats} repeat(s), torch threads {ours[0]['torch_threads']}, {os.cpu_count()} CPUs, "
        f"1-min load average {load[0]:.2f} before / {load[1]:.2f} after, "
        f"MALLOC_MMAP_THRESHOLD_ {args.mmap_threshold or 'unset (glibc default)'}",
        f"Timed window: steps {args.skip_steps + 1}-{args.steps} ({(args.steps - args.skip_steps) * per_step} samples) "
        f"by a torch.optim step hook, identical for both; medians over repeats.",
        "",
        f"{'':34}{'ours':>12}{'transformers':>14}{'ours/HF':>10}",
    ]

    def row(label: str, key: str, digits: int) -> None:
        a, b = median(ours, key), median(theirs, key)
        lines.append(f"{label:34}{a:>12.{digits}f}{b:>14.{digits}f}{a / b:>9.2f}x")

    row("samples/s (timed window)", "samples_per_s", 3)
    row("median seconds per step (window)", "median_step_s", 3)
    row("samples/s (trainer's own, loop)", "own_samples_per_s", 3)
    row("peak RSS MB (whole process)", "peak_rss_mb", 0)
    row("peak RSS MB after model load", "loaded_rss_mb", 0)
    row("first-step loss", "first_loss", 4)
    row("last-step loss", "last_loss", 4)
    data = theirs[0]["data"]
    grouping = "length-grouped" if theirs[0]["ours_grouped_by_length"] else "shuffled, not grouped"
    lines += [
        "",
        f"samples seen: ours {sorted({r['samples'] for r in ours})}, transformers {sorted({r['samples'] for r in theirs})}; "
        f"steps: ours {sorted({r['steps'] for r in ours})}, transformers {sorted({r['steps'] for r in theirs})}",
        f"speed ratio {median(ours, 'samples_per_s') / median(theirs, 'samples_per_s'):.2f}x (target >= 1.0x), "
        f"memory ratio {median(ours, 'peak_rss_mb') / median(theirs, 'peak_rss_mb'):.2f}x (target <= 1.0x)",
        "",
        f"Batches: ours {grouping}; baseline {'the same batches' if args.baseline_order == 'same' else 'shuffled, not grouped'}"
        f" (--baseline-order {args.baseline_order}). Tokens real/padded: ours {data['ours']['tokens']}/"
        f"{data['ours']['padded_tokens']}, baseline {data['transformers']['tokens']}/{data['transformers']['padded_tokens']}.",
        "",
        "What differs (by design):",
        f"  - ours encodes each distinct image once (feature cache): ours' batches hold {data['ours']['frames']} image "
        f"frames, {data['ours']['unique_frames']} distinct, so ours ran the frozen encoder on {data['ours']['unique_frames']}; "
        f"the baseline on all {data['transformers']['frames']}. The scene data has ~9 rows per picture, so a longer run "
        "(a full epoch) hits the cache more than this short one.",
        "  - transformers.Trainer logs every step (logging_steps=1); ours reads loss.item() every step as well.",
        "  - LoRA dropout draws differ between the processes; with the same batches the first-step loss should still "
        "agree (LoRA B starts at 0).",
        "Peak RSS is the whole child process: model load, row validation, training and, for ours, saving the adapter.",
        "It depends on how much freed memory glibc keeps: compare runs with --mmap-threshold 131072 for the working set.",
        "On a shared machine, torch threads compete with other processes: treat the figures as indicative there.",
    ]
    print("\n".join(lines))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random models built like tests/conftest.py (smoke test)")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per run")
    parser.add_argument("--skip-steps", type=int, default=3, help="first optimizer steps left out of the timed window (>= 1)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per trainer; medians are reported")
    parser.add_argument("--batch-size", type=int, default=4, help="rows per micro-batch")
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="peak AdamW learning rate")
    parser.add_argument("--lr-warmup", type=int, default=2, help="linear learning-rate warm-up steps")
    parser.add_argument("--lora-r", type=int, default=8, help="LoRA rank on q/k/v/o")
    parser.add_argument("--scenes", type=int, default=40, help="generated training scenes (about 8 rows each)")
    parser.add_argument("--max-length", type=int, default=None, help="rows longer are bad rows (default 1024; 400 with --tiny)")
    parser.add_argument("--max-bad-fraction", type=float, default=0.05, help="as data.max_bad_fraction")
    parser.add_argument("--seed", type=int, default=0, help="data order and initialisation seed")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per child (0: torch's default; default 1 with --tiny, else 0)")
    parser.add_argument("--mmap-threshold", type=int, default=0,
                        help="set MALLOC_MMAP_THRESHOLD_ (bytes) in both children (0: glibc default)")
    parser.add_argument("--baseline-order", choices=("same", "shuffled"), default="same",
                        help="same: the baseline gets ours' exact batches (length-grouped if ours groups); "
                             "shuffled: ours' sampler without length grouping")
    parser.add_argument("--workdir", help="where data, configs and logs go (default: a fresh temp folder)")
    parser.add_argument("--child", choices=RUNNERS, help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.skip_steps < 1 or args.steps <= args.skip_steps:
        parser.error("need 1 <= --skip-steps < --steps")
    if args.max_length is None:
        args.max_length = 400 if args.tiny else 1024
    if args.threads is None:  # tiny ops gain nothing from threads, and spinning threads suffer most on a busy machine
        args.threads = 1 if args.tiny else 0
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_train-"))
    logger.info("working in %s", workdir)
    from training.data.scenes import main as make_scenes

    make_scenes(["--out", str(workdir / "data"), "--train", str(args.scenes), "--val", "0", "--test", "0",
                 "--seed", str(args.seed)])
    if args.tiny:
        model, model_name = tiny_models(workdir / "models"), "tiny random Llama + tiny CLIP (tests/conftest.py)"
    else:
        model, model_name = {}, "built-in defaults (EfficientNet-Lite0, mlp connector, SmolLM2-135M-Instruct)"
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in RUNNERS}
    load = [os.getloadavg()[0]]
    if load[0] > 0.5 * (os.cpu_count() or 1):
        logger.warning("1-min load average is %.2f on %d CPUs: other work competes for the cores, figures will be noisy "
                       "(--threads 1 is steadier)", load[0], os.cpu_count() or 1)
    for repeat in range(args.repeats):
        order = RUNNERS if repeat % 2 == 0 else RUNNERS[::-1]  # alternate who runs first
        for runner in order:
            logger.info("repeat %d/%d: %s", repeat + 1, args.repeats, runner)
            config = write_run_config(workdir / f"{runner}-{repeat}", model, workdir / "data" / "train.jsonl", args)
            results[runner].append(launch(runner, config, args))
    load.append(os.getloadavg()[0])
    (workdir / "results.json").write_text(json.dumps(results, indent=1))
    report(results, args, model_name, load)


if __name__ == "__main__":
    main()
