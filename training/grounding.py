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


def deal_words(ids: Sequence[int], slots: int) -> list[list[int]]:
    """A box's word ids spread over its cell's ``slots`` tokens in order: one word each, the last token
    taking any words left over, tokens without a word left empty (they predict the background word)."""
    if slots == 1:
        return [list(ids)]
    dealt = [[word] for word in ids[: slots - 1]] + [list(ids[slots - 1 :])]
    return (dealt + [[] for _ in range(slots)])[:slots]


def grounded_alignment_loss(
    tokens: torch.Tensor,
    regions: Sequence[tuple[int, Sequence[int], tuple[float, float]]],
    background: Sequence[int],
    embeddings: torch.Tensor,
    negatives: int,
    logit_scale: float,
    grid: int | None,
    objectness: torch.Tensor | None = None,
    background_cells: int = 0,
) -> torch.Tensor | None:
    """Mean -log p of each token's target words, averaged over object cells and over background cells,
    plus the objectness scores' binary cross-entropy (does this cell hold a box's centre?) when given.

    Args:
        tokens: (F, N, D) media tokens, N per frame, or (F, N, S, D) with S tokens per cell (grid only):
            a box's words are dealt to its cell's tokens in order (``deal_words``).
        regions: (frame index, word ids, box centre) per described box; frames that no region names
            are left out.
        background: word ids every token not given a box must predict.
        embeddings: (V, D) the LLM's input-embedding matrix (not trained here).
        negatives: random vocabulary ids added to the candidates (drawn from torch's global RNG).
        logit_scale: multiplier on the dot products.
        grid: side of the token grid when cell ``i`` is the encoder cell ``i`` (box -> the cell of its
            centre; two boxes in one cell share it), None to match boxes to tokens one to one.
        objectness: (F, N) logits that a cell holds an object (grid only), or None.
        background_cells: with a grid, score only this many background cells per frame, drawn at random
            (0: all). Most cells are background and all learn the same word; a sample keeps the cost down.
    """
    if not regions:
        return None
    if tokens.dim() == 3:
        tokens = tokens.unsqueeze(2)
    if grid is None and (tokens.shape[2] != 1 or objectness is not None):
        raise ValueError("several tokens per cell and objectness scores need a token grid (grid=None matches single tokens)")
    with torch.autocast(tokens.device.type, enabled=False):  # the log-softmax over candidates in float32
        loss = _grounded_loss(
            tokens.float(), regions, background, embeddings.float(), negatives, logit_scale, grid, background_cells
        )
        if objectness is not None:
            loss = loss + _objectness_loss(objectness.float(), regions, grid)
    return loss


def _grounded_loss(tokens, regions, background, embeddings, negatives, logit_scale, grid, background_cells) -> torch.Tensor:
    frames, per_frame, slots = tokens.shape[:3]
    if grid is not None and grid * grid != per_frame:
        raise ValueError(f"a {grid}x{grid} grid does not have {per_frame} cells")
    if not background:
        raise ValueError("grounded alignment needs at least one background word id (align.background tokenised to nothing)")
    named = _named_frames(regions, frames)
    tokens, device = tokens[named], tokens.device  # (F', N, S, D)
    embeddings = embeddings.detach()
    sampled = torch.randint(0, embeddings.shape[0], (negatives,), device=embeddings.device)
    words = [torch.tensor(list(ids), dtype=torch.long, device=device) for _, ids, _ in regions]
    background_ids = torch.tensor(list(background), dtype=torch.long, device=device)
    candidates = torch.unique(torch.cat([*words, background_ids, sampled]))  # sorted
    column = {word: index for index, word in enumerate(candidates.tolist())}
    slot = {frame: index for index, frame in enumerate(named)}

    def log_probs_of(chosen: torch.Tensor) -> torch.Tensor:  # (M, S, D) -> (M, S, C)
        return torch.log_softmax(logit_scale * chosen @ embeddings[candidates].T, dim=-1)

    pairs: list[tuple[int, int, int]] = []  # (frame slot, cell, region index)
    for frame, members in _by_frame(regions).items():
        f = slot[frame]
        if grid is not None:
            pairs += [(f, grid_cell(regions[index][2], grid), index) for index in members]
            continue
        with torch.no_grad():  # the assignment that makes the matched tokens' losses lowest against staying background
            row = log_probs_of(tokens[f])[:, 0]  # (N, C)
            background_cost = -row[:, torch.searchsorted(candidates, background_ids)].mean(-1)  # (N,)
            cost = torch.stack([-row[:, torch.searchsorted(candidates, words[index])].mean(-1) for index in members], dim=1)
            chosen_tokens, chosen = linear_sum_assignment((cost - background_cost[:, None]).cpu().numpy())
        pairs += [(f, int(token), members[int(k)]) for token, k in zip(chosen_tokens, chosen)]
    is_object = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=device)  # (F', N)
    for f, cell, _ in pairs:
        is_object[f, cell] = True
    scored = is_object.clone()
    if grid is not None and 0 < background_cells < per_frame:
        draw = torch.rand(is_object.shape, device=device).masked_fill(is_object, 2.0)  # objects sort last
        scored.scatter_(1, draw.argsort(dim=1)[:, :background_cells], True)
    else:
        scored[:] = True
    row_of = scored.flatten().cumsum(0).view_as(scored) - 1  # (F', N): a scored cell's row in ``log_probs``
    log_probs = log_probs_of(tokens[scored])  # (M, S, C)
    targets = torch.zeros_like(log_probs)  # the weights of each token's target words
    marks = [
        (int(row_of[f, cell]), position, column[word])
        for f, cell, index in pairs
        for position, ids in enumerate(deal_words(regions[index][1], slots))
        for word in ids
    ]
    if marks:
        where = torch.tensor(marks, device=device).T  # (3, M)
        targets.index_put_(tuple(where), torch.ones(where.shape[1], device=device), accumulate=True)
    unfilled = targets.sum(-1) == 0  # (M, S): background cells, and an object cell's tokens left without a word
    targets[..., torch.searchsorted(candidates, background_ids)] += unfilled.float().unsqueeze(-1)
    targets = targets / targets.sum(-1, keepdim=True)
    per_cell = -(targets * log_probs).sum(-1).mean(-1)  # (M,)
    object_rows = is_object[scored]  # (M,)
    loss = per_cell[object_rows].mean()
    if (~object_rows).any():
        loss = loss + per_cell[~object_rows].mean()
    return loss


def _objectness_loss(scores: torch.Tensor, regions, grid: int) -> torch.Tensor:
    """Binary cross-entropy of (F, N) cell scores against "a box's centre lies in this cell", named frames only."""
    named = _named_frames(regions, scores.shape[0])
    if grid * grid != scores.shape[1]:
        raise ValueError(f"a {grid}x{grid} grid does not have {scores.shape[1]} objectness scores")
    target = torch.zeros(len(named), scores.shape[1], device=scores.device)
    slot = {frame: index for index, frame in enumerate(named)}
    for frame, _, centre in regions:
        target[slot[frame], grid_cell(centre, grid)] = 1.0
    return nn.functional.binary_cross_entropy_with_logits(scores[named], target)


def _named_frames(regions, frames: int) -> list[int]:
    named = sorted({frame for frame, _, _ in regions})
    outside = [frame for frame in named if not 0 <= frame < frames]
    if outside:
        raise ValueError(f"region frame indices {outside} are outside the batch's {frames} frames")
    return named


def _by_frame(regions) -> dict[int, list[int]]:
    members: dict[int, list[int]] = {}
    for index, (frame, _, _) in enumerate(regions):
        members.setdefault(frame, []).append(index)
    return members


def rescale_output(connector: nn.Module, measured_rms: float, target_rms: float) -> bool:
    """Scale the gain of the connector's last RMS norm so tokens measured at ``measured_rms`` sit at
    ``target_rms``; False (nothing changed) for a connector without one (``match_embedding_scale`` off)."""
    norms = [module for module in connector.modules() if isinstance(module, nn.RMSNorm)]
    if not norms or measured_rms <= 0:
        return False
    with torch.no_grad():
        norms[-1].weight.mul_(target_rms / measured_rms)
    return True
