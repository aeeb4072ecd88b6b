"""The seven CAER-S emotion classes and how folder names map onto them."""

from __future__ import annotations

CLASSES: tuple[str, ...] = ("Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")
NUM_CLASSES = len(CLASSES)

# CAER-S spells anger `Angry` in train/ and `Anger` in test/; both are Anger.
_ALIASES = {name.lower(): name for name in CLASSES} | {"angry": "Anger"}


class UnknownClassError(ValueError):
    """A folder or label that is none of the seven classes."""


def canonical_label(name: str, where: str | None = None) -> str:
    """Return the canonical class name for a folder name or label (case-insensitive).

    Raises `UnknownClassError` naming the folder, never guessing a label.
    """
    try:
        return _ALIASES[name.strip().lower()]
    except KeyError:
        place = f" (in {where})" if where else ""
        raise UnknownClassError(
            f"Unknown class folder {name!r}{place}; expected one of {', '.join(CLASSES)} (or 'Angry')."
        ) from None


def class_index(name: str) -> int:
    """Index of a class name (any accepted spelling) in the canonical order."""
    return CLASSES.index(canonical_label(name))
