"""A small name → factory registry, one per component kind (timm style).

Hyper-parameters name components by plain strings, so a checkpoint can rebuild its model from
its saved hyper-parameters alone, with no config files at hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

from glamor_lightning.errors import SetupError

T = TypeVar("T")


class UnknownNameError(SetupError):
    """A component name that no registry entry has (the message lists the known ones)."""


class Registry(Generic[T]):
    """Maps names to factories (classes or functions) that build one kind of component.

    Args:
        kind: what the registry holds, used in error messages ("backbone", "attention", ...).
        hint: an extra sentence appended to the unknown-name error.
    """

    def __init__(self, kind: str, hint: str = "") -> None:
        self.kind = kind
        self.hint = hint
        self._factories: dict[str, Callable[..., T]] = {}

    @overload
    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]: ...

    @overload
    def register(self, name: str, factory: Callable[..., T]) -> Callable[..., T]: ...

    def register(self, name: str, factory: Callable[..., T] | None = None) -> Any:
        """Register `factory` under `name`; without `factory`, return a decorator that does so."""

        def add(f: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._factories[name] = f
            return f

        return add if factory is None else add(factory)

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered under `name`; an unknown name raises an `UnknownNameError`
        (a RuntimeError) listing the known ones."""
        try:
            return self._factories[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def create(self, name: str, **kwargs: Any) -> T:
        """Build the component registered under `name` with `kwargs`."""
        return self.get(name)(**kwargs)

    def unknown_message(self, name: str) -> str:
        msg = f"Unknown {self.kind} '{name}'; known: {', '.join(self.names())}"
        return f"{msg}. {self.hint}" if self.hint else msg

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._factories)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"
