"""The models for inference alone: built from a serving snapshot's weights (``finch.learning.snapshot``),
in evaluation mode, without gradients, and without an optimiser or replay."""

from __future__ import annotations

from typing import Any

import torch

from finch.models.encoder import EncoderClassifier, EncoderConfig
from finch.models.generator import Decoder, GeneratorConfig

# The module behind each learner.
MODULES: dict[str, tuple[type[torch.nn.Module], type]] = {
    "router": (EncoderClassifier, EncoderConfig),
    "validator": (EncoderClassifier, EncoderConfig),
    "generator": (Decoder, GeneratorConfig),
}


def build_module(kind: str, config: dict[str, Any], weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A ``kind`` module made of ``weights``, frozen. They are a snapshot's and are not copied, so
    they must not change afterwards."""
    module_cls, config_cls = MODULES[kind]
    with torch.device("meta"):  # no memory and no random initialisation: the weights replace it all
        module = module_cls(config_cls(**config))
    module.load_state_dict(weights, assign=True)  # the weights themselves become the parameters
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
