"""GLAMOR-Net (Global-Local Attention for context-aware emotion recognition) in PyTorch Lightning."""

import os as _os

# No code path may wait on the network: albumentations otherwise checks for updates at import.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
