"""How the optimiser runs (not what it computes): one fact shared by the module and the measured training step."""

from __future__ import annotations


def sgd_kwargs(fused: bool) -> dict:
    """`torch.optim.SGD`'s implementation: its fused kernel (one call for every parameter: the same update up to
    float rounding, and 3-4x faster on CPU than the per-tensor loop torch picks there by default: 1.4 against
    4.0 ms a step for the original net's 58 tensors, 2.6 against 9.3 ms for MobileNetV2's 324, one thread), or
    that loop (`fused=False`)."""
    return {"fused": True} if fused else {"foreach": False}
