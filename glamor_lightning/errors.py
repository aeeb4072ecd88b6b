"""The project's own exception types, in a module with no heavy imports, so that entry points can report
them before torch and Lightning are loaded."""

from __future__ import annotations


class UserError(ValueError):
    """A problem with what the user asked for (a path, a setting), reported as one line."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded safely or does not fit its own hyper-parameters."""


class SetupError(RuntimeError):
    """A setting that cannot be carried out as given: an unknown component name, pretrained weights that are
    not to be had here. The message says what to set instead."""
