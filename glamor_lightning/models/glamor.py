"""GLAMOR-Net and its paper baselines as one plain `nn.Module`, configured by strings and numbers."""

from __future__ import annotations

import os
from typing import NamedTuple

from torch import Tensor, nn

from .attention import ATTENTIONS, create_attention
from .encoders import create_encoder
from .fusion import FUSIONS, create_fusion
from .modality_dropout import apply_masks, keep_masks

#: Input settings of the paper's Table 4.
INPUTS: tuple[str, ...] = ("face", "context", "context_visible", "both")
#: What the auxiliary context head reads (`context_head_input`): v_c as the fusion gets it, or the context map
#: average-pooled (no attention, so no face guide: a unimodal head on the context encoder).
CONTEXT_HEAD_INPUTS: tuple[str, ...] = ("attention", "pooled")


class GlamorOutput(NamedTuple):
    """What `GlamorNet.forward` returns."""

    logits: Tensor  #: [B, num_classes]
    attention: Tensor  #: [B, H, W] context attention, sums to 1 over H×W; [B, 1, 1] ones for inputs='face'
    fusion_weights: Tensor | None  #: [B, 2] (w_face, w_context) from 'fusion_net', else None
    face_logits: Tensor | None = None  #: [B, num_classes] auxiliary face-only head (`aux_heads=True`)
    context_logits: Tensor | None = None  #: [B, num_classes] auxiliary context-only head (`aux_heads=True`)
    face_vector: Tensor | None = None  #: v_f [B, Df] as the fusion got it (before modality dropout)
    context_vector: Tensor | None = None  #: v_c [B, Dc] as the fusion got it (before modality dropout)


class GlamorFeatures(NamedTuple):
    """The branch vectors before fusion (None for a branch the model lacks)."""

    face: Tensor | None  #: v_f [B, Df], global average pool of the face map
    context: Tensor | None  #: v_c [B, Dc], attention-pooled context map
    attention: Tensor  #: as in `GlamorOutput.attention`
    head_context: Tensor | None = None  #: the auxiliary context head's input where it is not v_c (see `forward`)


class GlamorNet(nn.Module):
    """GLAMOR-Net (Le et al. 2021): face and context encoders (same kind, separate weights),
    context attention, fusion, and a classifier Linear(→hidden) → ReLU → Dropout → Linear(→classes).

    Args:
        backbone: encoder name, `original` / `mobilenetv2` / `resnet18` or any timm model.
        attention: `gla` (GLAMOR-Net), `standard` (CAER-Net-S) or `none` (average pooling).
        fusion: `fusion_net` (GLAMOR-Net), `add`, `max`, `concat`, or `none` for single-input models.
        inputs: paper Table 4 setting: `face`, `context` (face masked), `context_visible` (face
            not masked) or `both`. Masking is the data's job; see `masks_face`.
        num_classes: number of emotion classes.
        gla_batchnorm: BatchNorm inside the GLA MLP, as the authors' code (False: the paper's figure).
        hidden: width of the attention, fusion and classifier hidden layers.
        dropout: dropout probability before the last Linear.
        pretrained: start both encoders from timm's pretrained weights.
        pretrained_path: start both encoders from this local weights file.
        aux_heads: add auxiliary classifiers on v_f alone (`face_head`) and on v_c alone
            (`context_head`), each shaped like the main classifier, for staged training (paper §4.2:
            the branches are trained separately first). They are training aids: `logits` never depends
            on them. Needs `inputs='both'`.
        context_head_input: what the auxiliary context head reads: `attention`, v_c (GLA's output, which can
            carry an echo of the face through GLA's guide), or `pooled`, the context map average-pooled, which
            no face enters: the unimodal head of Gradient-Blending (Wang et al., CVPR 2020), trained on the
            context encoder alone. Needs `aux_heads`.
        modality_dropout: in training, the share of samples that lose one whole branch (face or
            context, zeroed before the fusion; `models.modality_dropout`). Needs `inputs='both'`.
        modality_dropout_guide: a sample whose face modality dropout drops loses it as GLA's guide too
            (the guide is zeroed), so the context vector cannot echo the face it lacks. Needs
            `modality_dropout` > 0 and `attention='gla'`.
        fusion_temperature, fusion_floor: gate regularisation of `fusion='fusion_net'`
            (`models.fusion.FusionNet`); 1 and 0 are the paper's gate.

    Settings are strict, so that a hyper-parameter never names a part the model lacks (and a
    sweep never trains the same model twice under two names):

    - `inputs='face'`: no context encoder and no attention: needs `attention='none'`,
      `fusion='none'`; the classifier sees v_f. Its attention output is a [B, 1, 1] map of ones
      (one cell holding all the weight), a tensor rather than None so exports keep one signature.
    - `inputs='context'` / `'context_visible'`: needs `fusion='none'`; the classifier sees v_c
      only. The face encoder exists only for `attention='gla'`, whose guide v_f is.
    - `inputs='both'`: needs a real fusion (not `'none'`).

    A broken setting raises a ValueError saying what to set; an unknown component name raises
    a RuntimeError listing the known ones.
    """

    #: The top-level parts, in order; a setting has those it needs (None attributes for the others).
    #: Staged training freezes and re-opens them, and the optimiser has one parameter group per part.
    PARTS: tuple[str, ...] = (
        "face_encoder", "context_encoder", "attention", "fusion", "classifier", "face_head", "context_head",
    )  # fmt: skip
    #: The parts of each branch (the fusion, classifier and auxiliary heads belong to neither): what the
    #: collapse diagnostics and gradient modulation measure and scale per branch.
    BRANCH_PARTS: dict[str, tuple[str, ...]] = {"face": ("face_encoder",), "context": ("context_encoder", "attention")}

    def __init__(
        self,
        backbone: str = "original",
        attention: str = "gla",
        fusion: str = "fusion_net",
        inputs: str = "both",
        num_classes: int = 7,
        gla_batchnorm: bool = True,
        hidden: int = 128,
        dropout: float = 0.5,
        pretrained: bool = False,
        pretrained_path: str | os.PathLike[str] | None = None,
        bn_momentum: float | None = None,
        aux_heads: bool = False,
        modality_dropout: float = 0.0,
        fusion_temperature: float = 1.0,
        fusion_floor: float = 0.0,
        modality_dropout_guide: bool = False,
        context_head_input: str = "attention",
    ) -> None:
        super().__init__()
        _check_setting(inputs, attention, fusion, num_classes)
        if aux_heads and inputs != "both":
            raise ValueError(
                f"GlamorNet with inputs='{inputs}': set aux_heads=False; auxiliary face-only and context-only "
                "heads need both branches (inputs='both')"
            )
        if modality_dropout and inputs != "both":
            raise ValueError(
                f"GlamorNet with inputs='{inputs}': set modality_dropout=0; dropping a branch "
                "needs two of them (inputs='both')"
            )
        if context_head_input not in CONTEXT_HEAD_INPUTS:
            raise ValueError(
                f"context_head_input must be one of {', '.join(CONTEXT_HEAD_INPUTS)}; got {context_head_input!r}"
            )
        if context_head_input != "attention" and not aux_heads:
            raise ValueError(
                f"context_head_input={context_head_input!r} says what the auxiliary context head reads: set "
                "aux_heads=true, or context_head_input=attention"
            )
        if not 0.0 <= modality_dropout < 1.0:
            raise ValueError(f"modality_dropout must be in [0, 1), got {modality_dropout}")
        if modality_dropout_guide and not (modality_dropout and attention == "gla"):
            raise ValueError(
                "modality_dropout_guide drops a dropped face from GLA's guide: it needs modality_dropout > 0 "
                f"(got {modality_dropout}) and attention='gla' (got '{attention}'); or set modality_dropout_guide=false"
            )
        self.inputs = inputs
        self.modality_dropout = float(modality_dropout)
        self.modality_dropout_guide = bool(modality_dropout_guide)
        self.context_head_input = context_head_input
        self.config = dict(
            backbone=backbone, attention=attention, fusion=fusion, inputs=inputs, num_classes=num_classes,
            gla_batchnorm=gla_batchnorm, hidden=hidden, dropout=dropout, bn_momentum=bn_momentum,
            aux_heads=aux_heads, modality_dropout=modality_dropout, fusion_temperature=fusion_temperature,
            fusion_floor=fusion_floor, modality_dropout_guide=modality_dropout_guide,
            context_head_input=context_head_input,
        )  # fmt: skip
        has_context = inputs != "face"
        has_face = not has_context or inputs == "both" or attention == "gla"
        self.classifies_face = inputs in ("face", "both")

        def encoder() -> nn.Module:
            return create_encoder(backbone, pretrained=pretrained, pretrained_path=pretrained_path)

        self.face_encoder = encoder() if has_face else None
        self.context_encoder = encoder() if has_context else None
        face_dim = self.face_encoder.out_channels if self.face_encoder is not None else 0
        context_dim = self.context_encoder.out_channels if self.context_encoder is not None else 0
        self.attention = (
            create_attention(attention, face_dim, context_dim, hidden=hidden, batchnorm=gla_batchnorm)
            if has_context
            else None
        )
        self.fusion = create_fusion(
            fusion,
            face_dim if self.classifies_face else 0,
            context_dim,
            hidden=hidden,
            temperature=fusion_temperature,
            floor=fusion_floor,
        )
        self.classifier = _classifier(self.fusion.out_features, hidden, dropout, num_classes)
        self.face_head = _classifier(face_dim, hidden, dropout, num_classes) if aux_heads else None
        self.context_head = _classifier(context_dim, hidden, dropout, num_classes) if aux_heads else None
        if bn_momentum is not None:
            set_bn_momentum(self, bn_momentum)

    @property
    def masks_face(self) -> bool:
        """Whether the context input should have the face box zeroed (all settings but 'context_visible')."""
        return self.inputs != "context_visible"

    @property
    def uses_face(self) -> bool:
        """Whether `forward` reads the face crop."""
        return self.face_encoder is not None

    @property
    def attention_reads_face(self) -> bool:
        """Whether the context attention is guided by the face vector (GLA): v_c then depends on v_f."""
        return self.uses_context and self.config["attention"] == "gla"

    @property
    def uses_context(self) -> bool:
        """Whether `forward` reads the context image."""
        return self.context_encoder is not None

    def features(
        self,
        face: Tensor | None,
        context: Tensor | None,
        guide_keep: Tensor | None = None,
        head_guide: Tensor | None = None,
    ) -> GlamorFeatures:
        """Branch vectors and attention map; images are float [B, 3, H, W] in [0, 1], any size.
        `guide_keep` [B, 1] (bool): the samples whose face guides the attention (the others get a zero guide).
        `head_guide` [B] (long): for each sample, the sample whose face (detached) guides GLA a second time over
        the same context map, giving `head_context` (the auxiliary context head's input; `forward`). In training,
        GLA's BatchNorm then sees two passes per step, so its running statistics move twice as fast. With
        `context_head_input='pooled'`, `head_context` is the context map average-pooled (`pooled_context`)."""
        v_f = v_c = head_v_c = None
        if self.face_encoder is not None:
            v_f = self.face_encoder(_need(face, "face")).mean(dim=(2, 3))
        if self.context_encoder is None:
            attn = v_f.new_ones(v_f.shape[0], 1, 1)
        else:
            guide = v_f if guide_keep is None or v_f is None else v_f * guide_keep.to(v_f.dtype)
            context_map = self.context_encoder(_need(context, "context"))
            v_c, attn = self.attention(guide, context_map)
            if head_guide is not None:
                head_v_c, _ = self.attention(v_f.detach()[head_guide], context_map)
            elif self.context_head_input == "pooled":
                head_v_c = self.pooled_context(context_map)
        return GlamorFeatures(v_f, v_c, attn, head_v_c)

    @staticmethod
    def pooled_context(context_map: Tensor) -> Tensor:
        """What a `context_head_input='pooled'` head reads: the context map [B, Dc, H, W] averaged over its cells."""
        return context_map.mean(dim=(2, 3))

    def forward(self, face: Tensor | None, context: Tensor | None, head_guide: Tensor | None = None) -> GlamorOutput:
        """face [B, 3, 96, 96], context [B, 3, 112, 112] (float in [0, 1]; other sizes work too).
        An input the setting does not use may be None. `head_guide` [B] (long, GLA with auxiliary heads only):
        the auxiliary context head reads v_c with GLA guided by these samples' faces instead of each sample's
        own (training against the face's echo in v_c: docs/training.md); the fused prediction is unchanged."""
        if head_guide is not None and not (
            self.attention_reads_face and self.context_head is not None and self.context_head_input == "attention"
        ):
            raise ValueError(
                "head_guide re-guides GLA for the auxiliary context head: it needs attention='gla', aux_heads and "
                "context_head_input='attention'"
            )
        dropping = self.training and self.modality_dropout > 0
        masks = self._keep_masks(face) if dropping and self.modality_dropout_guide else None
        v_f, v_c, attn, head_v_c = self.features(face, context, masks[0] if masks else None, head_guide)
        face_logits = self.face_head(v_f) if self.face_head is not None else None
        head_input = v_c if head_v_c is None else head_v_c
        context_logits = self.context_head(head_input) if self.context_head is not None else None
        kept = v_f, v_c
        if dropping:  # the auxiliary heads always see their branch
            # drawn here unless the guide needs them first: the random stream of earlier runs stays the same
            v_f, v_c = apply_masks(v_f, v_c, *(masks or self._keep_masks(face)))
        logits, weights = self.decide(v_f, v_c)
        return GlamorOutput(logits, attn, weights, face_logits, context_logits, *kept)

    def _keep_masks(self, face: Tensor) -> tuple[Tensor, Tensor]:
        return keep_masks(face.shape[0], self.modality_dropout, face.device)

    def decide(self, v_f: Tensor | None, v_c: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The fused prediction from the branch vectors: (logits, fusion weights or None). The collapse
        diagnostics call it with one vector zeroed, to measure what that branch adds to the decision."""
        fused, weights = self.fusion(v_f if self.classifies_face else None, v_c)
        return self.classifier(fused), weights

    @property
    def has_aux_heads(self) -> bool:
        """Whether the auxiliary face-only and context-only heads exist."""
        return self.face_head is not None


def _classifier(in_features: int, hidden: int, dropout: float, num_classes: int) -> nn.Sequential:
    """Linear(→hidden) → ReLU → Dropout → Linear(→classes): the classifier and the auxiliary heads."""
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


def _need(x: Tensor | None, name: str) -> Tensor:
    if x is None:
        raise ValueError(f"this GlamorNet setting reads the {name} image, got None")
    return x


def _check_setting(inputs: str, attention: str, fusion: str, num_classes: int) -> None:
    """Raise for unknown names (RuntimeError) or a setting that makes no sense (ValueError)."""
    ATTENTIONS.get(attention)
    FUSIONS.get(fusion)
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {', '.join(INPUTS)}; got '{inputs}'")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    problems = []
    if inputs == "face" and attention != "none":
        problems.append(f"set attention='none' (got '{attention}'): there is no context to attend to")
    if inputs != "both" and fusion != "none":
        problems.append(f"set fusion='none' (got '{fusion}'): a single branch has nothing to fuse")
    if inputs == "both" and fusion == "none":
        others = ", ".join(n for n in FUSIONS.names() if n != "none")
        problems.append(f"choose a fusion of the two branches ({others}); 'none' is for single-input models")
    if problems:
        raise ValueError(f"GlamorNet with inputs='{inputs}': " + "; ".join(problems))


def set_bn_momentum(module: nn.Module, momentum: float) -> None:
    """Set the running-statistics momentum of every BatchNorm in `module` (PyTorch convention).

    The authors' Keras value (0.01 here) suits their ~17k steps per epoch; on a few thousand images
    the running statistics lag far behind the weights and evaluation collapses, so our configs use 0.1.
    """
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum
