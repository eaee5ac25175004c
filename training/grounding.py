"""Lexical alignment: an ``align`` objective for the connector that never runs the LLM.

Each row's answer words (its labelled token ids) must be explained by the row's media tokens,
scored against the LLM's own input-embedding matrix ``E``. A row is a mixture of its tokens:

    P(w | row) = mean over media tokens t of softmax_v(s * z_t . E_v)[w]
    loss       = -mean over the row's distinct answer words w of log P(w | row)

so a token that lies under a red square learns to point at "red", "square", "large", "top"... in the
LLM's own word space, and tokens over background soak up the frequent words. The softmax runs over
the batch's answer words plus ``negatives`` vocabulary entries drawn at random (a sampled softmax).
The connector's output gain acts as the softmax temperature and grows while training, so at the end
of the stage ``rescale_output`` brings the tokens back to the embeddings' RMS (their direction is what
was learned; an LLM reading tokens three times louder than its words is a needless shift).

Why it exists: trained with the usual next-token loss through a frozen LLM on a small budget, the
connector collapses: its outputs end up the same for every picture (spread across images fell from
47% of their RMS at initialisation to 7-18%), the least disruptive input for an LLM that has never
seen them, and the LLM never learns to read them. Started from lexical alignment, the same instruct
run leans on the pictures (README, "The built-in default adapter").
"""

from __future__ import annotations

import torch
from torch import nn

from assistant.model import IGNORE_INDEX


def answer_words(labels: torch.Tensor, special_ids: list[int]) -> list[torch.Tensor]:
    """Distinct labelled token ids per row (special tokens such as end-of-turn left out)."""
    special = torch.tensor(sorted(special_ids), dtype=labels.dtype, device=labels.device)
    words = []
    for row in labels:  # (T,)
        ids = row[row != IGNORE_INDEX]
        words.append(torch.unique(ids[~torch.isin(ids, special)]))
    return words


def single_picture_words(words: list[torch.Tensor], frames_per_row: list[int]) -> list[torch.Tensor]:
    """Keep the words of rows with exactly one picture; others get none (and are left out of the loss).

    The words of a two-picture row ("first", "second") belong to neither picture. Trained with such rows
    (and with length-grouped batches, changed at the same time) the connector's spread across pictures
    was 7%; without both, 34%.
    """
    return [ids if count == 1 else ids[:0] for ids, count in zip(words, frames_per_row, strict=True)]


def lexical_alignment_loss(
    tokens: torch.Tensor,
    tokens_per_row: list[int],
    words: list[torch.Tensor],
    embeddings: torch.Tensor,
    negatives: int,
    logit_scale: float,
) -> torch.Tensor | None:
    """Mean over rows with media and words of -mean_w log P(w | row); None if no row has both.

    Args:
        tokens: (K, D) media tokens of the whole batch, row-major.
        tokens_per_row: how many of ``tokens`` belong to each row, in order.
        words: per row, the distinct target token ids (``answer_words``).
        embeddings: (V, D) the LLM's input-embedding matrix (not trained here).
        negatives: random vocabulary ids added to the candidates (drawn from torch's global RNG).
        logit_scale: multiplier on the dot products.
    """
    if len(tokens_per_row) != len(words) or sum(tokens_per_row) != tokens.shape[0]:
        raise ValueError(f"{tokens.shape[0]} media tokens do not split into rows of {tokens_per_row}")
    used = [index for index, (count, ids) in enumerate(zip(tokens_per_row, words)) if count and ids.numel()]
    if not used:
        return None
    embeddings = embeddings.detach()
    sampled = torch.randint(0, embeddings.shape[0], (negatives,), device=embeddings.device)
    candidates = torch.unique(torch.cat([*(words[index] for index in used), sampled]))  # sorted
    log_probs = torch.log_softmax(logit_scale * tokens.float() @ embeddings[candidates].float().T, dim=-1)  # (K, C)
    starts = torch.tensor([0, *tokens_per_row]).cumsum(0).tolist()
    losses = []
    for index in used:
        row = log_probs[starts[index] : starts[index + 1]]  # (n, C)
        mixture = torch.logsumexp(row, dim=0) - torch.log(torch.tensor(float(row.shape[0])))  # (C,)
        losses.append(-mixture[torch.searchsorted(candidates, words[index])].mean())
    return torch.stack(losses).mean()


def rescale_output(connector: nn.Module, measured_rms: float, target_rms: float) -> bool:
    """Scale the gain of the connector's last RMS norm so tokens measured at ``measured_rms`` sit at
    ``target_rms``; False (nothing changed) for a connector without one (``match_embedding_scale`` off)."""
    norms = [module for module in connector.modules() if isinstance(module, nn.RMSNorm)]
    if not norms or measured_rms <= 0:
        return False
    with torch.no_grad():
        norms[-1].weight.mul_(target_rms / measured_rms)
    return True
