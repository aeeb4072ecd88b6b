"""Context reveal: a curriculum in which early training contexts still show the face.

The context encoder of GLAMOR-Net sees the image with the face masked out. On data where most of what
the context tells is other people's expressions (CAER's bystanders, SynthCAER's companion), the only
direct lesson in reading an expression that a masked context offers is a bystander who may or may not
be the one that matters, so the encoder learns to read faces slowly (issue 17: at 12 epochs a masked
context-only model reads the companion of a weak face 42 % of the time, one that also sees the face
70 %). Revealing the face in a share of the training contexts early on gives the encoder that lesson on
the labelled face itself; the share falls linearly to zero, so the model spends the rest of training,
and all of validation and test, on masked contexts as the paper defines them. A curriculum in the
sense of Bengio et al., "Curriculum learning" (ICML 2009): easier examples first.

Whether a sample is revealed depends on (seed, epoch, row) only: the same in every worker, on a resume
and with any number of processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_STREAM = 0x5E7EA1  # keeps the reveal draws apart from the augmentation's (seed, epoch, row)


@dataclass(frozen=True)
class ContextReveal:
    """Reveal the face in a training context with probability `start · (1 − epoch / epochs)` (0 from
    epoch `epochs` on). `contexts` holds the unmasked contexts, row for row like the masked cache."""

    contexts: np.ndarray
    start: float
    epochs: int
    seed: int = 0

    def __post_init__(self) -> None:
        check_reveal(self.start, self.epochs)

    def probability(self, epoch: int) -> float:
        if self.epochs <= 0 or epoch >= self.epochs:
            return 0.0
        return self.start * (1.0 - epoch / self.epochs)

    def reveals(self, epoch: int, row: int) -> bool:
        p = self.probability(epoch)
        if p <= 0.0:
            return False
        return bool(np.random.default_rng([self.seed, epoch, row, _STREAM]).random() < p)


def check_reveal(start: float, epochs: int) -> None:
    """A ValueError naming the setting for a schedule that cannot be meant."""
    if not 0.0 <= start <= 1.0:
        raise ValueError(f"data.context_reveal={start}: a share of samples, in [0, 1]")
    if epochs < 0:
        raise ValueError(f"data.context_reveal_epochs={epochs}: must be >= 0")
    if start > 0 and epochs == 0:
        raise ValueError(
            f"data.context_reveal={start} needs data.context_reveal_epochs > 0 (the epochs over which the "
            "share of revealed contexts falls to 0)"
        )
