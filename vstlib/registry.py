"""Implementations picked by name from the config (DDPO-style): one registry type, one error.

    LEARNERS = Registry("learner", "train.learner")
    @LEARNERS.register("pathwise")
    def pathwise(...): ...
    LEARNERS.pick(cfg.train.learner)      # an unknown name: one line listing the choices
"""
from __future__ import annotations

from typing import Any, Callable

from vstlib.errors import InputError


class UnknownName(InputError, ValueError):
    """A name no implementation is registered under: bad input (one line in the CLI) and a ValueError."""


class Registry(dict):
    """name -> implementation (a class, a builder function or a value)."""

    def __init__(self, what: str, setting: str = "", entries: dict | None = None):
        super().__init__(entries or {})
        self.what, self.setting = what, setting

    def register(self, name: str) -> Callable[[Any], Any]:
        """Decorator: ``@REG.register("name")``; a name is registered once."""
        def deco(obj):
            old = self.get(name)
            if old is not None and getattr(old, "__qualname__", old) != getattr(obj, "__qualname__", obj):
                raise ValueError(f"{self.what} name {name!r} is taken by {old!r}")
            self[name] = obj
            return obj
        return deco

    def pick(self, name: str):
        """The implementation registered as ``name``, or UnknownName naming the choices."""
        if name not in self:
            where = f" (set {self.setting})" if self.setting else ""
            raise UnknownName(f"unknown {self.what} {name!r}{where}; choose one of {', '.join(sorted(self))}",
                              fix=f"use one of: {', '.join(sorted(self))}")
        return self[name]


__all__ = ["Registry", "UnknownName"]
