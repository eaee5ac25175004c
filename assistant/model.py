"""The multimodal model: frozen encoders -> trainable connectors -> the language model.

``embed`` is where the placeholder contract is enforced: for each modality the number of placeholder
positions in ``input_ids`` must equal the number of connector tokens supplied, else a clear error.
``forward`` takes pixel batches per modality (training) or ready connector outputs (inference with
cached encoder features). The model knows nothing about messages, templates or generation loops.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from adapters import build_connector
from assistant.config import AssistantConfig
from assistant.encoders import MediaEncoder
from assistant.errors import AssistantError
from assistant.processor import PLACEHOLDER_IDS

IGNORE_INDEX = -100  # label value for positions without a training target


class MultimodalModel(nn.Module):
    # ``forward`` returns a mean loss over labelled tokens; it does not take ``num_items_in_batch``,
    # so transformers.Trainer must divide by its gradient-accumulation steps itself.
    accepts_loss_kwargs = False

    def __init__(self, llm: PreTrainedModel, encoders: dict[str, MediaEncoder], connectors: nn.ModuleDict) -> None:
        super().__init__()
        self.llm = llm
        self.encoders = nn.ModuleDict(encoders)
        self.connectors = connectors

    @classmethod
    def build(cls, config: AssistantConfig, llm: PreTrainedModel, encoders: dict[str, MediaEncoder]) -> "MultimodalModel":
        """Create fresh connectors sized between each encoder and the LLM."""
        embeddings = llm.get_input_embeddings()
        # Media tokens that start at the scale of text tokens let the frozen LLM read them from step one.
        embedding_rms = embeddings.weight.detach().float().pow(2).mean().sqrt().item()
        connectors = nn.ModuleDict()
        for modality, encoder in encoders.items():
            options = config.modalities[modality].connector.options()
            options["output_rms"] = embedding_rms if options.pop("match_embedding_scale") else None
            connectors[modality] = build_connector(
                config.modalities[modality].connector.kind, encoder.hidden_size, embeddings.embedding_dim,
                encoder.num_tokens, **options,
            )
        model = cls(llm, encoders, connectors)
        model.connectors.to(next(llm.parameters()).device)
        return model

    def tokens_per_frame(self) -> dict[str, int]:
        """LLM tokens per frame of each fixed-length modality (image); audio depends on the clip (``media_tokens``)."""
        return {
            modality: self.connectors[modality].num_output_tokens(encoder.num_tokens)
            for modality, encoder in self.encoders.items()
            if encoder.modality != "audio"
        }

    def media_tokens(self, modality: str, frame) -> int:
        """LLM tokens one loaded frame (an image, a video frame, an audio clip) becomes: the placeholder count."""
        return self.connectors[modality].num_output_tokens(self.encoders[modality].num_frames(frame))

    def tokens_for_samples(self, modality: str, samples: int) -> int:
        """LLM tokens of an audio clip of ``samples`` samples."""
        return self.connectors[modality].num_output_tokens(self.encoders[modality].frames_for_samples(samples))

    def samples_within(self, modality: str, budget: int) -> int:
        """Most samples one audio clip may have for its LLM tokens to fit in ``budget`` (a binary search)."""
        connector, encoder = self.connectors[modality], self.encoders[modality]
        low, high = 0, budget * 1024  # frames; no connector makes 1024 frames fewer than one token
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if connector.num_output_tokens(middle) <= budget else (low, middle - 1)
        return low * encoder.samples_per_frame

    @property
    def device(self) -> torch.device:
        return self.llm.get_input_embeddings().weight.device

    def connect(self, modality: str, features: torch.Tensor) -> torch.Tensor:
        """Encoder tokens (B, N, D_enc) -> LLM tokens (B, M, D_llm) in the LLM's dtype."""
        connector = self.connectors[modality]
        dtype = next(connector.parameters()).dtype
        tokens = connector(features.to(device=self.device, dtype=dtype))
        return tokens.to(self.llm.get_input_embeddings().weight.dtype)

    def connect_each(self, modality: str, items: list[torch.Tensor]) -> list[torch.Tensor]:
        """Encoder tokens of items of different lengths, each (N_k, D_enc) -> its LLM tokens (M_k, D_llm)."""
        return [self.connect(modality, item.unsqueeze(0))[0] for item in items]

    def connect_cells(self, modality: str, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encoder tokens (B, N, D_enc) -> every cell's tokens (B, N, S, D_llm) and objectness scores (B, N) or None.

        For a connector with ``cells`` (``mlp``) these are all the cells it may choose from; for others the
        output tokens themselves, one per "cell" (B, M, 1, D_llm).
        """
        connector = self.connectors[modality]
        features = features.to(device=self.device, dtype=next(connector.parameters()).dtype)
        if hasattr(connector, "cells"):
            return connector.cells(features)
        return connector(features).unsqueeze(2), None

    def embed(self, input_ids: torch.Tensor, media_tokens: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Token embeddings with placeholder positions replaced by connector outputs.

        Args:
            input_ids: (B, T) ids where media positions hold ``PLACEHOLDER_IDS[modality]``.
            media_tokens: Per modality, (K, D) connector tokens in order of appearance (row-major
                over the batch), K equal to that modality's placeholder count.
        """
        media_tokens = media_tokens or {}
        is_media = input_ids < 0
        embeddings = self.llm.get_input_embeddings()(input_ids.masked_fill(is_media, 0))  # (B, T, D)
        for modality, placeholder in PLACEHOLDER_IDS.items():
            mask = input_ids == placeholder  # (B, T)
            supplied = media_tokens.get(modality)
            count = 0 if supplied is None else supplied.shape[0]
            if int(mask.sum()) != count:
                raise AssistantError(
                    f"{modality} placeholder mismatch: the prompt has {int(mask.sum())} {modality} "
                    f"positions but the connector produced {count} tokens"
                )
            if count:
                embeddings = embeddings.masked_scatter(mask.unsqueeze(-1), supplied.to(embeddings.dtype))
        unknown = is_media & ~torch.isin(input_ids, torch.tensor(list(PLACEHOLDER_IDS.values()), device=input_ids.device))
        if unknown.any():
            raise AssistantError(f"input_ids hold unknown negative ids {input_ids[unknown].unique().tolist()}")
        return embeddings

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: dict[str, torch.Tensor] | None = None,
        labels: torch.Tensor | None = None,
        encoder_features: dict[str, torch.Tensor] | None = None,
        media_tokens_only: bool = False,
        all_cells: bool = False,
        **llm_kwargs,
    ):
        """Training/evaluation forward: encode (or take encoded) media, connect, splice, run the LLM.

        Args:
            pixel_values: Per modality, a preprocessed batch (K, ...) of the K frames in order.
            encoder_features: Per modality, frozen-encoder outputs (K, N, D_enc) computed beforehand
                (e.g. from a feature cache), or a list of K (N_k, D_enc) tensors for a modality whose
                items differ in length (audio); used instead of ``pixel_values`` for that modality.
            media_tokens_only: Return the connector outputs per modality, (K*M, D), without running
                the LLM (objectives on the connector alone, e.g. lexical alignment).
            all_cells: With ``media_tokens_only``, return ``connect_cells`` per modality instead: every
                cell's tokens (K, N, S, D) and objectness scores (K, N) or None; for a list modality
                (audio), each item's tokens (M_k, D).
        """
        features = dict(encoder_features or {})
        for modality, batch in (pixel_values or {}).items():
            with torch.no_grad():
                features[modality] = self.encoders[modality].features(batch.to(self.device)).float()  # (K, N, D_enc)
        if media_tokens_only and all_cells:  # a list modality (audio): each item's tokens (M_k, D)
            return {
                modality: self.connect_each(modality, batch) if isinstance(batch, list) else self.connect_cells(modality, batch)
                for modality, batch in features.items() if len(batch)
            }
        media_tokens = {
            modality: torch.cat(self.connect_each(modality, batch)) if isinstance(batch, list)
            else self.connect(modality, batch).flatten(0, 1)  # (K*M, D)
            for modality, batch in features.items() if len(batch)
        }
        if media_tokens_only:
            return media_tokens
        embeddings = self.embed(input_ids, media_tokens)
        if labels is None:
            return self.llm(inputs_embeds=embeddings, attention_mask=attention_mask, **llm_kwargs)
        return self._labelled_loss(embeddings, attention_mask, labels, **llm_kwargs)

    def _labelled_loss(self, embeddings: torch.Tensor, attention_mask, labels: torch.Tensor, **llm_kwargs) -> CausalLMOutputWithPast:
        """Next-token loss computed only where there is a label.

        Projecting every position onto a large vocabulary (49k for SmolLM2) costs a fifth of the
        forward pass and most of its activation memory, while answers are a small share of a
        training sequence; so the decoder's hidden states are gathered at labelled positions first.
        """
        hidden = self.llm.get_decoder()(inputs_embeds=embeddings, attention_mask=attention_mask, **llm_kwargs).last_hidden_state
        targets = labels[:, 1:]  # position t predicts token t + 1
        keep = targets != IGNORE_INDEX  # (B, T - 1)
        logits = self.llm.get_output_embeddings()(hidden[:, :-1][keep])  # (K, V)
        loss = nn.functional.cross_entropy(logits.float(), targets[keep]) if keep.any() else logits.sum() * 0.0
        return CausalLMOutputWithPast(loss=loss)
