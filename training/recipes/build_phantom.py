"""Build the phantom adapter, the medical plugin's worked domain fine-tune, offline on a CPU:

    python -m training.recipes.build_phantom [--out runs/phantom] [--install]

1. ``training.data.phantom_rows``: synthetic CT phantoms written as DICOM with fake PHI, de-identified and
   windowed by the plugin's own ingest (``plugins.medical.dicom_io``), and rows about them;
2. ``align`` (``phantom_align.yaml``): the image connector alone, each lesion's cell pointed at its words;
3. ``instruct`` (``phantom_instruct.yaml``): connector + LoRA learn the findings JSON and the follow-up answers
   (``--instruct-rows``: every row, or only the report rows, whose findings JSON is what the plugin asks for);
4. evaluate on held-out phantoms and on the independent check (``training.phantom_eval``);
5. with ``--install``, copy the adapter into ``plugins/medical/phantom_adapter`` with a model card.

What the adapter knows is this phantom domain and nothing else: the model card says so.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from training.recipes.build_default import install_adapter, run_stage

logger = logging.getLogger("training.recipes.build_phantom")
SHIPPED = Path(__file__).resolve().parents[2] / "plugins" / "medical" / "phantom_adapter"


def model_card(summary: dict) -> str:
    from training.phantom_eval import format_phantom_table

    return f"""# Phantom adapter (a worked example, not a medical device)

Trained by `python -m training.recipes.build_phantom` in {summary['train_wall_time_min']} minutes on a 2-core CPU
(data {summary['data_min']} min, align {summary['align']['steps']} steps, instruct {summary['instruct']['steps']} steps on
{'the report rows' if summary.get('instruct_rows') == 'report' else 'every row'}).

**What it is.** The built-in default's encoder (EfficientNet-Lite0, frozen) and LLM (SmolLM2-135M-Instruct) with
an image connector and LoRA trained on {summary['studies']['train']} synthetic CT *phantoms*
(`training/data/phantoms.py`): one axial abdominal slice with a liver, spleen, two kidneys, spine and aorta, and
0-3 round lesions (at most one per organ) 8-40 mm across, darker or brighter than their organ, with noise. It writes
the findings of such a slice as JSON (organ, darker/brighter, size in mm, confidence) and answers questions about
them.

**What it cannot do.** It has never seen a real scan. It knows four organs, round lesions and one slice position;
it does not know anatomy beyond that, other body parts, MR, X-ray, artefacts, or any disease. Its sizes are read
off a 7x7 grid of picture features. Nothing it writes is a diagnosis: the plugin labels every report a machine
draft for review by a qualified clinician.

**How it reads a frame** (`plugins/medical/findings.py`, the same for training rows and the plugin): CT at the
40/400 window (`CT_WINDOW`) whatever window the file stores, resampled to 1.75 mm per pixel on a 224-pixel square,
then smoothed by a Gaussian of 2 pixels (`DENOISE_SIGMA_PX`, 3.5 mm) so the frozen encoder tells faint lesions from
noise. It was never trained or scored on lesions under 8 mm, which the smoothing blends further into their organ.

**Scores** (`python -m training.evaluate --task phantom --data <run>/data --adapter <adapter>`):

{format_phantom_table(summary['test'])}
"""


def instruct_rows(data: Path, kind: str) -> Path:
    """The instruct stage's rows: ``all`` of ``train.jsonl`` (a report row and a questions row per study), or only
    the ``report`` rows (the findings JSON, then four follow-up questions)."""
    if kind == "all":
        return data / "train.jsonl"
    chosen = data / "train_report_rows.jsonl"
    lines = (data / "train.jsonl").read_text(encoding="utf-8").splitlines()
    chosen.write_text("".join(line + "\n" for line in lines if json.loads(line)["question_type"] == "report"), encoding="utf-8")
    return chosen


def install(summary: dict, out: Path) -> None:
    install_adapter(out / "instruct" / "adapter", SHIPPED, lambda: model_card(summary))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.recipes.build_phantom", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/phantom", help="working folder (data, stages, report)")
    parser.add_argument("--train", type=int, default=1700, help="training studies (two rows each)")
    parser.add_argument("--val", type=int, default=24, help="validation studies (scored at the end of each stage)")
    parser.add_argument("--test", type=int, default=200, help="held-out studies")
    parser.add_argument("--eval-studies", type=int, default=100, help="held-out and independent-check studies scored at the end")
    parser.add_argument("--align-steps", type=int, default=None, help="override the align recipe's steps")
    parser.add_argument("--instruct-steps", type=int, default=None, help="override the instruct recipe's steps")
    parser.add_argument("--instruct-rows", choices=("all", "report"), default="report",
                        help="instruct on every row, or on the report rows only")
    parser.add_argument("--install", action="store_true", help="copy the result into plugins/medical/phantom_adapter")
    parser.add_argument("--install-only", action="store_true", help="install the finished run in --out without training")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    if args.install_only:
        install(json.loads((out / "build_summary.json").read_text()), out)
        return 0
    data = out / "data"
    started = time.perf_counter()
    if not (data / "summary.json").is_file():
        from training.data.phantom_rows import main as make_phantoms

        make_phantoms(["--out", str(data), "--train", str(args.train), "--val", str(args.val), "--test", str(args.test)])
    data_min = (time.perf_counter() - started) / 60
    align = run_stage("phantom_align.yaml", out / "align", data / "train.jsonl", data,
                      ["--optim.max-steps", str(args.align_steps)] if args.align_steps else [])
    instruct = run_stage("phantom_instruct.yaml", out / "instruct", instruct_rows(data, args.instruct_rows), data,
                         ["--base", align["adapter"], *(["--optim.max-steps", str(args.instruct_steps)] if args.instruct_steps else [])])
    minutes = (time.perf_counter() - started) / 60
    logger.info("phantom adapter: %.1f min (data %.1f)", minutes, data_min)

    from training.phantom_eval import phantom_report

    report = phantom_report(instruct["adapter"], data, args.eval_studies)
    (out / "test_report.json").write_text(json.dumps(report, indent=2))
    summary = {"train_wall_time_min": round(minutes, 1), "data_min": round(data_min, 1), "align": align, "instruct": instruct,
               "instruct_rows": args.instruct_rows,
               "studies": json.loads((data / "summary.json").read_text())["studies"],
               "test": {name: {k: v for k, v in part.items() if k != "answers"} for name, part in report.items()}}
    (out / "build_summary.json").write_text(json.dumps(summary, indent=2))
    if args.install:
        install(summary, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
