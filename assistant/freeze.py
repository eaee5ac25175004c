"""The one freeze policy: backbones frozen, connectors (and LoRA, if attached) trainable.

Training code calls this function and nothing else decides what trains.
"""

from __future__ import annotations

import logging

from torch import nn

logger = logging.getLogger(__name__)


def apply_freeze_policy(model: nn.Module, train_connectors: bool = True, train_lora: bool = True) -> int:
    """Freeze every parameter, then unfreeze connector and LoRA parameters; return the trainable count.

    Args:
        model: A ``MultimodalModel`` (anything with ``connectors`` and an ``llm`` possibly wrapped by peft).
        train_connectors: Unfreeze the connectors (the ``align`` and ``instruct`` stages both do).
        train_lora: Unfreeze LoRA weights when the LLM carries them.
    """
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    if train_connectors:
        for parameter in model.connectors.parameters():
            parameter.requires_grad_(True)
    if train_lora:
        for name, parameter in model.llm.named_parameters():
            if "lora_" in name:
                parameter.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("trainable parameters: %d of %d (%.2f%%)", trainable, total, 100.0 * trainable / max(total, 1))
    return trainable
