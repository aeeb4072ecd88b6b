"""GLAMOR-Net building blocks: encoders, attention, fusion (one registry each) and the model."""

from .attention import ATTENTIONS, GlobalLocalAttention, NoAttention, StandardAttention, create_attention
from .encoders import ENCODERS, KERAS_BN, Encoder, OriginalEncoder, TimmEncoder, create_encoder
from .fusion import FUSIONS, AddFusion, ConcatFusion, FusionNet, MaxFusion, NoFusion, create_fusion
from .glamor import INPUTS, GlamorFeatures, GlamorNet, GlamorOutput
from .registry import Registry

__all__ = [
    "ATTENTIONS",
    "ENCODERS",
    "FUSIONS",
    "INPUTS",
    "KERAS_BN",
    "AddFusion",
    "ConcatFusion",
    "Encoder",
    "FusionNet",
    "GlamorFeatures",
    "GlamorNet",
    "GlamorOutput",
    "GlobalLocalAttention",
    "MaxFusion",
    "NoAttention",
    "NoFusion",
    "OriginalEncoder",
    "Registry",
    "StandardAttention",
    "TimmEncoder",
    "create_attention",
    "create_encoder",
    "create_fusion",
]
