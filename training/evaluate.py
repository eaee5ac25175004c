"""Evaluate an adapter on rows in the training formats, plus a text-only regression check; or the
retrieval and captioning plugins' models (``training.retrieval_eval``).

    python -m training.evaluate --adapter DIR --data test.jsonl [--max-rows N] [--out report.json]
    python -m training.evaluate --task retrieval [--scenes 1000] [--embedder default]   # picture <-> text Recall@k
    python -m training.evaluate --task documents                                        # document hit@5
    python -m training.evaluate --task captions [--adapter DIR | --captioner MODEL]     # BLEU-4 and CIDEr
    python -m training.evaluate --task audio --data runs/default/data [--adapter DIR]  # spoken vs typed, sounds
    python -m training.evaluate --task transcription                                    # transcribe_audio WER
    python -m training.evaluate --task text_to_image [--model DIR]                      # GenEval-style picture checks

Every assistant turn of every row is answered by the ``Assistant`` (greedy, earlier turns given as
gold history) and scored: accuracy per question type (normalised exact match), overall VQA accuracy
(all short answers), caption BLEU-4, POPE-style existence accuracy with its absent-object part, and
multi-image comparison accuracy. The text check asks general questions of the base LLM and of the
tuned assistant and reports the share of the base's correct key answers the tuned one keeps.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from assistant import Assistant, AssistantConfig, AssistantError
from assistant.config import GGUF_TYPES, SERVING_MODES, EngineConfig
from training.data.rows import load_rows, message_text, summarise
from training.metrics import bleu4, normalise_answer
from training.text_regression import TEXT_PROMPTS, has_key

logger = logging.getLogger("training.evaluate")

SHORT_ANSWER_TOKENS, CAPTION_TOKENS = 12, 80


def answer_rows(assistant: Assistant, rows: list) -> list[dict[str, Any]]:
    """One record per assistant turn: type, question, reference, prediction, correct."""
    records = []
    for row in tqdm(rows, desc="answering", unit="row"):
        kind = row.question_type or "unknown"
        for index, message in enumerate(row.messages):
            if message["role"] != "assistant":
                continue
            reference = message_text(message["content"])
            budget = CAPTION_TOKENS if kind in ("caption", "said") else SHORT_ANSWER_TOKENS
            prediction = assistant.chat(row.messages[:index], max_new_tokens=budget)
            records.append({
                "row": row.id,
                "type": kind,
                "question": message_text(row.messages[index - 1]["content"]),
                "reference": reference,
                "prediction": prediction,
                "correct": normalise_answer(prediction) == normalise_answer(reference),
            })
    return records


def score(records: list[dict[str, Any]]) -> dict[str, Any]:
    by_type: dict[str, list[bool]] = defaultdict(list)
    for record in records:
        if record["type"] != "caption":
            by_type[record["type"]].append(record["correct"])
    short = [r["correct"] for r in records if r["type"] != "caption"]
    absent = [r["correct"] for r in records if r["type"] == "existence" and normalise_answer(r["reference"]) == "no"]
    captions = [r for r in records if r["type"] == "caption"]
    return {
        "overall_vqa_accuracy": sum(short) / max(len(short), 1),
        "accuracy_by_type": {kind: sum(v) / len(v) for kind, v in sorted(by_type.items())},
        "questions_by_type": {kind: len(v) for kind, v in sorted(by_type.items())},
        "pope_existence_accuracy": sum(by_type["existence"]) / max(len(by_type["existence"]), 1),
        "pope_absent_object_accuracy": sum(absent) / max(len(absent), 1),
        "comparison_accuracy": sum(by_type["comparison"]) / max(len(by_type["comparison"]), 1),
        "caption_bleu4": bleu4([r["prediction"] for r in captions], [r["reference"] for r in captions]) if captions else None,
        "questions": len(short),
        "captions": len(captions),
    }


def text_regression(tuned: Assistant, base: Assistant, max_new_tokens: int = 48) -> dict[str, Any]:
    """Share of the base LLM's correct key answers that the tuned assistant keeps."""
    cases = []
    for prompt, key in TEXT_PROMPTS:
        messages = [{"role": "user", "content": prompt}]
        base_reply = base.chat(messages, max_new_tokens=max_new_tokens)
        tuned_reply = tuned.chat(messages, max_new_tokens=max_new_tokens)
        cases.append({"prompt": prompt, "key": key, "base": base_reply, "tuned": tuned_reply,
                      "base_has_key": has_key(base_reply, key), "tuned_has_key": has_key(tuned_reply, key)})
    counted = [c for c in cases if c["base_has_key"]]
    kept = sum(c["tuned_has_key"] for c in counted)
    return {"prompts": len(cases), "base_correct": len(counted), "kept": kept,
            "kept_share": kept / max(len(counted), 1), "cases": cases}


def base_assistant(tuned: Assistant) -> Assistant:
    """The same LLM without the adapter's LoRA, connector or system prompt."""
    llm = dataclasses.replace(tuned.config.llm, lora=dataclasses.replace(tuned.config.llm.lora, r=0))
    return Assistant.from_config(AssistantConfig(llm=llm, modalities=tuned.config.modalities))


def format_table(report: dict[str, Any]) -> str:
    lines = ["| metric | value |", "|---|---|"]
    lines.append(f"| overall VQA accuracy | {report['overall_vqa_accuracy']:.1%} ({report['questions']} questions) |")
    for kind, value in report["accuracy_by_type"].items():
        lines.append(f"| {kind} accuracy | {value:.1%} ({report['questions_by_type'][kind]}) |")
    lines.append(f"| POPE existence accuracy | {report['pope_existence_accuracy']:.1%} |")
    lines.append(f"| absent-object (answer 'no') accuracy | {report['pope_absent_object_accuracy']:.1%} |")
    if report["caption_bleu4"] is not None:
        lines.append(f"| caption BLEU-4 | {report['caption_bleu4']:.1f} ({report['captions']} captions) |")
    text = report.get("text_regression")
    if text:
        lines.append(f"| text-only check: base answers kept | {text['kept']}/{text['base_correct']} = {text['kept_share']:.1%} ({text['prompts']} prompts) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--task")
    known, rest = first.parse_known_args(argv)
    if known.task == "text_to_image":  # its own options: training.text_to_image_eval
        from training.text_to_image_eval import main as text_to_image

        text_to_image(rest)
        return 0
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=["vqa", "retrieval", "documents", "captions", "audio", "transcription", "phantom", "text_to_image"],
                        default="vqa", help="vqa: answer --data rows (default); retrieval, documents, captions: see training.retrieval_eval; "
                             "audio (--data: the recipe's data folder), transcription: see training.audio_eval; phantom (--data: "
                             "a training.data.phantom_rows folder; --adapter default: the shipped phantom adapter): training.phantom_eval; "
                             "text_to_image: training.text_to_image_eval (its own options)")
    parser.add_argument("--adapter", help="adapter artifact folder (default: the built-in default)")
    parser.add_argument("--data", help="rows: LLaVA .json/.jsonl or messages .jsonl (task vqa)")
    parser.add_argument("--scenes", type=int, default=None, help="scenes per split (retrieval: 1000, captions: 200)")
    parser.add_argument("--embedder", default="default", help="retrieval/documents: a sentence-transformers or CLIP model")
    parser.add_argument("--chunk-tokens", type=int, default=None, help="documents: chunk size in embedder tokens (default: the index default)")
    parser.add_argument("--captioner", default=None, help="captions: a Hugging Face image-to-text model instead of the assistant")
    parser.add_argument("--data-root", help="media paths are relative to this (default: the data file's folder)")
    parser.add_argument("--max-rows", type=int, default=None, help="evaluate only the first N rows")
    parser.add_argument("--skip-text-check", action="store_true", help="skip the text-only regression check")
    parser.add_argument("--out", help="write the full JSON report (with every answer) here")
    parser.add_argument("--serving", choices=SERVING_MODES, default=None,
                        help="vqa: the LLM weights to answer with (assistant.llm_serving; default: the adapter's)")
    parser.add_argument("--gguf-type", choices=GGUF_TYPES, default=None,
                        help="vqa with --serving llama_cpp: engine.gguf_type (default: the adapter's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.task in ("audio", "transcription"):
        return audio_task(args)
    if args.task == "phantom":
        return phantom_task(args)
    if args.task != "vqa":
        return plugin_task(args)
    if not args.data:
        parser.error("--data is required for --task vqa")
    try:
        engine = {"engine": EngineConfig(gguf_type=args.gguf_type)} if args.gguf_type else {}
        tuned = Assistant.from_pretrained(args.adapter, serving=args.serving, **engine)
        rows, row_report = load_rows(args.data, args.data_root)
    except (AssistantError, FileNotFoundError, ValueError) as error:
        logger.error("%s", error)
        return 2
    if row_report.bad_count:
        logger.warning("skipping bad rows: %s", summarise(row_report))
    rows = rows[: args.max_rows] if args.max_rows else rows
    started = time.perf_counter()
    records = answer_rows(tuned, rows)
    report = score(records)
    report["seconds_per_answer"] = (time.perf_counter() - started) / max(len(records), 1)
    if not args.skip_text_check:
        report["text_regression"] = text_regression(tuned, base_assistant(tuned))
    logger.info("results for %s on %s:\n%s", args.adapter or "the built-in default", args.data, format_table(report))
    if args.out:
        Path(args.out).write_text(json.dumps({**report, "answers": records}, indent=1))
    return 0


def audio_task(args: argparse.Namespace) -> int:
    """Run the audio or transcription evaluation and print (and optionally write) its report."""
    from training import audio_eval

    try:
        if args.task == "transcription":
            report = audio_eval.transcription_report()
            print(json.dumps({k: v for k, v in report.items() if k != "cases"}, indent=1))
        else:
            if not args.data:
                logger.error("--task audio needs --data: the recipe's data folder (with test_audio.jsonl)")
                return 2
            assistant = Assistant.from_pretrained(args.adapter)
            if "audio" not in assistant.supported_media:
                logger.error("%s has no audio encoder", args.adapter or "the built-in default")
                return 2
            report = audio_eval.audio_report(assistant, Path(args.data), args.max_rows)
            print(audio_eval.format_audio_table(report))
    except (AssistantError, FileNotFoundError, RuntimeError) as error:
        logger.error("%s", error)
        return 2
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    return 0


def phantom_task(args: argparse.Namespace) -> int:
    """Score a phantom adapter's drafted findings on held-out phantoms and the independent check."""
    from training.phantom_eval import format_phantom_table, phantom_report

    if not args.data:
        logger.error("--task phantom needs --data: a training.data.phantom_rows folder (python -m training.data.phantom_rows)")
        return 2
    if args.adapter is None:
        from plugins.medical.tool import PHANTOM_ADAPTER

        args.adapter = str(PHANTOM_ADAPTER)
    try:
        report = phantom_report(args.adapter, Path(args.data), args.max_rows)
    except (AssistantError, FileNotFoundError) as error:
        logger.error("%s", error)
        return 2
    print(format_phantom_table(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


def plugin_task(args: argparse.Namespace) -> int:
    """Run a retrieval or captioning task and print (and optionally write) its report."""
    from training import retrieval_eval

    try:
        if args.task == "captions":
            from assistant.captioning import AssistantCaptioner, HFCaptioner

            captioner = HFCaptioner(args.captioner) if args.captioner else AssistantCaptioner(Assistant.from_pretrained(args.adapter))
            report = retrieval_eval.caption_quality(captioner, args.scenes or 200)
        else:
            from assistant.embedders import build_embedder

            embedder = build_embedder(args.embedder)
            report = (retrieval_eval.picture_retrieval(embedder, args.scenes or 1000) if args.task == "retrieval"
                      else retrieval_eval.document_retrieval(embedder, chunk_tokens=args.chunk_tokens))
    except AssistantError as error:
        logger.error("%s", error)
        return 2
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
