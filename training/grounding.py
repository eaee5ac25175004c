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

Grounded rows (``regions``: a box and its words, ``training.data.rows``) get a sharper target,
``grounded_alignment_loss``: one token per described box must predict that box's words
("large red circle left") and every other token the background word. Which token: for a connector
that keeps the encoder's grid (``mlp``) the one whose cell holds the box's centre (boxes centred in
one cell share it); for one that does not (``resampler``) the token that fits the box best, by a
one-to-one (Hungarian) matching, as DETR assigns its queries (boxes beyond the token count are left out). A picture then reaches the LLM as a few word-like tokens, one per object,
with the object's attributes bound together, which is what "what colour is the triangle" and
"how many circles" need; the mixture objective above leaves the words of different objects unbound.
"""

from __future__ import annotations

from typing import Sequence

import torch
from scipy.optimize import linear_sum_assignment
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


def grid_cell(centre: tuple[float, float], grid: int) -> int:
    """Raster index of the cell of a ``grid`` x ``grid`` map that holds ``centre`` (fractions of the picture)."""
    column, row = (min(max(int(value * grid), 0), grid - 1) for value in centre)
    return row * grid + column


def grounded_alignment_loss(
    tokens: torch.Tensor,
    regions: Sequence[tuple[int, Sequence[int], tuple[float, float]]],
    background: Sequence[int],
    embeddings: torch.Tensor,
    negatives: int,
    logit_scale: float,
    grid: int | None,
) -> torch.Tensor | None:
    """Mean -log p of each token's target words, averaged over object tokens and over background tokens.

    Args:
        tokens: (F, N, D) media tokens, N per frame.
        regions: (frame index, word ids, box centre) per described box; frames that no region names
            are left out.
        background: word ids every token not given a box must predict.
        embeddings: (V, D) the LLM's input-embedding matrix (not trained here).
        negatives: random vocabulary ids added to the candidates (drawn from torch's global RNG).
        logit_scale: multiplier on the dot products.
        grid: side of the token grid when token ``i`` is the encoder cell ``i`` (box -> the token of its
            centre cell; two boxes in one cell share it), None to match boxes to tokens one to one.
    """
    if not regions:
        return None
    with torch.autocast(tokens.device.type, enabled=False):  # the log-softmax over candidates in float32
        return _grounded_loss(tokens.float(), regions, background, embeddings.float(), negatives, logit_scale, grid)


def _grounded_loss(tokens, regions, background, embeddings, negatives, logit_scale, grid) -> torch.Tensor:
    frames, per_frame = tokens.shape[0], tokens.shape[1]
    if grid is not None and grid * grid != per_frame:
        raise ValueError(f"a {grid}x{grid} grid does not have {per_frame} tokens")
    if not background:
        raise ValueError("grounded alignment needs at least one background word id (align.background tokenised to nothing)")
    named = sorted({frame for frame, _, _ in regions})
    outside = [frame for frame in named if not 0 <= frame < frames]
    if outside:
        raise ValueError(f"region frame indices {outside} are outside the batch's {frames} frames")
    embeddings = embeddings.detach()
    sampled = torch.randint(0, embeddings.shape[0], (negatives,), device=embeddings.device)
    words = [torch.tensor(list(ids), dtype=torch.long, device=tokens.device) for _, ids, _ in regions]
    background_ids = torch.tensor(list(background), dtype=torch.long, device=tokens.device)
    candidates = torch.unique(torch.cat([*words, background_ids, sampled]))  # sorted
    slot = {frame: index for index, frame in enumerate(named)}
    log_probs = torch.log_softmax(logit_scale * tokens[named] @ embeddings[candidates].T, dim=-1)
    targets = torch.zeros_like(log_probs)  # (F', N, C): the weights of each token's target words
    is_object = torch.zeros(log_probs.shape[:2], dtype=torch.bool, device=tokens.device)
    columns = [torch.searchsorted(candidates, ids) for ids in words]
    by_frame: dict[int, list[int]] = {}
    for index, (frame, _, _) in enumerate(regions):
        by_frame.setdefault(frame, []).append(index)
    for frame, members in by_frame.items():
        f = slot[frame]
        if grid is not None:
            pairs = [(grid_cell(regions[index][2], grid), index) for index in members]
        else:  # the assignment that makes the matched tokens' losses lowest against staying background
            with torch.no_grad():
                background_cost = -log_probs[f][:, torch.searchsorted(candidates, background_ids)].mean(-1)  # (N,)
                cost = torch.stack([-log_probs[f][:, columns[index]].mean(-1) for index in members], dim=1)
                chosen_tokens, chosen = linear_sum_assignment((cost - background_cost[:, None]).cpu().numpy())
            pairs = [(int(token), members[int(k)]) for token, k in zip(chosen_tokens, chosen)]
        for token, index in pairs:
            targets[f, token, columns[index]] += 1.0
            is_object[f, token] = True
    targets[..., torch.searchsorted(candidates, background_ids)] += (~is_object).float().unsqueeze(-1)
    targets = targets / targets.sum(-1, keepdim=True)
    per_token = -(targets * log_probs).sum(-1)  # (F', N)
    loss = per_token[is_object].mean()
    if (~is_object).any():
        loss = loss + per_token[~is_object].mean()
    return loss


def rescale_output(connector: nn.Module, measured_rms: float, target_rms: float) -> bool:
    """Scale the gain of the connector's last RMS norm so tokens measured at ``measured_rms`` sit at
    ``target_rms``; False (nothing changed) for a connector without one (``match_embedding_scale`` off)."""
    norms = [module for module in connector.modules() if isinstance(module, nn.RMSNorm)]
    if not norms or measured_rms <= 0:
        return False
    with torch.no_grad():
        norms[-1].weight.mul_(target_rms / measured_rms)
    return True
