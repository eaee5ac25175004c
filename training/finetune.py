"""Fine-tune an assistant's connector (``align``) or connector + LoRA (``instruct``) on your data.

    python -m training.finetune --config my_run.yaml [--optim.max-steps 200 ...]
    accelerate launch -m training.finetune --config my_run.yaml     # several GPUs / nodes
    torchrun --nproc_per_node 2 -m training.finetune --config my_run.yaml

A thin shell over ``training.trainer.Trainer``; errors about the data or config end the run with a
one-line message and exit code 2 instead of a stack trace.
"""

from __future__ import annotations

import logging
import sys

from assistant import AssistantError
from training.config import load_train_config
from training.contract import TemplateContractError

logger = logging.getLogger("training.finetune")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from training.trainer import Trainer, TrainingError

    try:
        config = load_train_config(argv)
        summary = Trainer(config).train()
    except (AssistantError, TrainingError, TemplateContractError) as error:
        logger.error("%s", error)
        return 2
    logger.info("adapter written to %s (%d steps, %.2f samples/s)", summary["adapter"], summary["steps"], summary["samples_per_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
