"""Audio alignment: the ``align`` objective for the audio connector, CTC onto the LLM's own words.

An audio clip that a row transcribes (``"transcript"`` on its audio part: the words spoken, or a
description of a sound such as "ping ping ping" for three beeps) trains the connector so that its tokens, read in
order, spell the transcript in the LLM's input-embedding space:

    logits_t = s * z_t . E_c      over candidate words c (the batch's transcript tokens, the blank
                                  word and ``negatives`` random vocabulary entries: a sampled softmax)
    loss     = CTC(logits, transcript tokens, blank = the blank word)

CTC needs no timing: it sums over every monotonic alignment of the transcript to the tokens, with
the blank word (the image alignment's background word) in between. A spoken question then reaches
the LLM as tokens that lie near the embeddings of its own words, and a sound as tokens near
"ping ping ping" or "rising", so the instruct stage starts from tokens the LLM can already read,
as the lexical objective does for pictures (``training.grounding``). The LLM is not run, so a step
is cheap. At 6.25 tokens per second, speech of up to about 6 words per second fits (CTC needs at
least one token per transcript token, plus one between repeats); rows whose transcript is longer
than their tokens are left out of the loss.
"""

from __future__ import annotations

import torch
from torch import nn


def ctc_alignment_loss(
    tokens: list[torch.Tensor],
    targets: list[list[int]],
    embeddings: torch.Tensor,
    blank: int,
    negatives: int,
    logit_scale: float,
) -> torch.Tensor | None:
    """Mean CTC loss over the clips whose targets fit their tokens; None if none does.

    Args:
        tokens: per clip, (T_i, D) connector outputs.
        targets: per clip, the transcript's token ids (the blank id left out).
        embeddings: (V, D) the LLM's input-embedding matrix (not trained here).
        blank: token id of the blank word.
        negatives: random vocabulary ids added to the candidates (torch's global RNG).
        logit_scale: multiplier on the dot products.
    """
    usable = [
        index for index, (clip, target) in enumerate(zip(tokens, targets, strict=True))
        if target and clip.shape[0] >= len(target) + sum(a == b for a, b in zip(target, target[1:]))
    ]
    if not usable:
        return None
    device = embeddings.device
    wanted = torch.tensor(sorted({blank, *(i for index in usable for i in targets[index])}), device=device)
    if negatives:
        wanted = torch.unique(torch.cat([wanted, torch.randint(0, embeddings.shape[0], (negatives,), device=device)]))
    position = {int(token): slot for slot, token in enumerate(wanted.tolist())}
    candidates = embeddings[wanted].detach()  # (C, D)
    lengths = torch.tensor([tokens[index].shape[0] for index in usable])
    padded = nn.utils.rnn.pad_sequence([tokens[index] for index in usable], batch_first=False)  # (T, B, D)
    log_probs = torch.log_softmax(logit_scale * padded.float() @ candidates.float().T, dim=-1)  # (T, B, C)
    flat = torch.tensor([position[i] for index in usable for i in targets[index]], dtype=torch.long)
    target_lengths = torch.tensor([len(targets[index]) for index in usable])
    return nn.functional.ctc_loss(
        log_probs, flat.to(device), lengths, target_lengths, blank=position[blank], reduction="mean", zero_infinity=True
    )
