"""`Registry[T]`: one lookup shape for every kind of named thing (extractors, fusion models, corpus
recipes, training schedules, optimisers).

    FUSIONS: Registry[type[FusionModel]] = Registry("fusion model")

    @FUSIONS.register("late_fusion", "late")        # a decorator: name, then aliases
    class LateFusion(FusionModel): ...

    OPTIMIZERS.register("adam", entry=make_adam)     # a plain call
    FUSIONS.get("late")                              # aliases resolve
    FUSIONS.names("*fusion")                         # fnmatch pattern and/or predicate over entries
    FUSIONS.get("dfq")   # UnknownNameError: unknown fusion model 'dfq' (did you mean 'dqf'?); registered: ...

A duplicate name or alias raises ValueError naming the existing entry. Entries are filled by an
explicit import list in each package (no wildcard discovery).
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name that is not registered. Both a KeyError and a ValueError, so callers may catch either."""

    def __init__(self, message: str, *, kind: str = "", name: str = "", close_matches: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.name = name
        self.close_matches = close_matches

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return self.message


class Registry(Generic[T]):
    """Named entries of one kind, with aliases; see the module docstring.

    kind: what the entries are, for messages ("fusion model"). case_sensitive False: names and
    aliases are looked up lower-cased (and registered lower-cased). check: called as
    `check(name, entry)` before an entry is added; it raises to refuse the entry. on_register:
    called as `on_register(name, entry)` after it is added. For registries of classes: subclass_of
    refuses (TypeError) an entry that is not a subclass of it; name_attribute is set on the class to
    its registered name.
    """

    def __init__(self, kind: str, *, case_sensitive: bool = True,
                 check: Callable[[str, T], None] | None = None,
                 on_register: Callable[[str, T], None] | None = None,
                 subclass_of: type | None = None, name_attribute: str | None = None) -> None:
        self.kind = kind
        self.case_sensitive = case_sensitive
        self._check = check
        self._on_register = on_register
        self._subclass_of = subclass_of
        self._name_attribute = name_attribute
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}  # alias -> canonical name

    # --- registering ------------------------------------------------------------------------------
    def register(self, name: str, *aliases: str, entry: T | None = None):
        """Register `entry` under `name` (+ aliases) and return it; without `entry`, a decorator."""
        if entry is not None:
            return self._add(name, aliases, entry)

        def decorate(obj: T) -> T:
            return self._add(name, aliases, obj)

        return decorate

    def _add(self, name: str, aliases: tuple[str, ...], entry: T) -> T:
        keys = [self._key(name), *(self._key(alias) for alias in aliases)]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{self.kind} {name!r}: an alias repeats a name ({keys})")
        for key in keys:
            owner = self._owner(key)
            if owner is not None:
                raise ValueError(f"{self.kind} name {key!r} is already registered "
                                 f"(by {owner!r}: {_describe(self._entries[owner])})")
        if self._subclass_of is not None and not (isinstance(entry, type) and issubclass(entry, self._subclass_of)):
            raise TypeError(f"{self.kind} {name!r}: {entry!r} is not a subclass of {self._subclass_of.__name__}")
        if self._check is not None:
            self._check(keys[0], entry)
        self._entries[keys[0]] = entry
        for alias in keys[1:]:
            self._aliases[alias] = keys[0]
        if self._name_attribute is not None:
            setattr(entry, self._name_attribute, keys[0])
        if self._on_register is not None:
            self._on_register(keys[0], entry)
        return entry

    # --- looking up -------------------------------------------------------------------------------
    def get(self, name: str) -> T:
        """The entry registered under `name` or one of its aliases; UnknownNameError otherwise."""
        return self._entries[self.canonical(name)]

    def canonical(self, name: str) -> str:
        """The registered name that `name` (a name or an alias) stands for; UnknownNameError otherwise."""
        key = self._key(name)
        owner = self._owner(key)
        if owner is None:
            raise self._unknown(name, key)
        return owner

    def names(self, pattern: str | None = None, predicate: Callable[[T], bool] | None = None) -> list[str]:
        """Sorted registered names (not aliases), optionally those matching an fnmatch `pattern`
        and/or whose entry satisfies `predicate`."""
        selected = []
        for name, entry in self._entries.items():
            if pattern is not None and not fnmatch.fnmatchcase(name, self._key(pattern)):
                continue
            if predicate is not None and not predicate(entry):
                continue
            selected.append(name)
        return sorted(selected)

    def aliases(self, name: str | None = None) -> dict[str, str]:
        """{alias: name} of every alias (or only of `name`'s aliases)."""
        owner = None if name is None else self.canonical(name)
        return {alias: target for alias, target in sorted(self._aliases.items()) if owner in (None, target)}

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._owner(self._key(name)) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"

    # --- helpers ----------------------------------------------------------------------------------
    def _key(self, name: str) -> str:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        key = name.strip()
        return key if self.case_sensitive else key.lower()

    def _owner(self, key: str) -> str | None:
        if key in self._entries:
            return key
        return self._aliases.get(key)

    def _unknown(self, name: str, key: str) -> UnknownNameError:
        candidates = [*self._entries, *self._aliases]
        close = tuple(difflib.get_close_matches(key, candidates, n=3, cutoff=0.6))
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        registered = ", ".join(self.names()) or "(none)"
        pairs = ", ".join(f"{alias}={target}" for alias, target in sorted(self._aliases.items()))
        aliases = f" (aliases: {pairs})" if pairs else ""
        return UnknownNameError(f"unknown {self.kind} {name!r}{hint}; registered: {registered}{aliases}",
                                kind=self.kind, name=name, close_matches=close)


def _describe(entry: object) -> str:
    """A readable name for an entry in messages: module.qualname for classes and functions."""
    qualname = getattr(entry, "__qualname__", None)
    module = getattr(entry, "__module__", None)
    return f"{module}.{qualname}" if qualname and module else repr(entry)
