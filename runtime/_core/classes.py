"""Class loading for spawns: import by path within a pool's allow-list, build with typed args."""

from __future__ import annotations

import importlib
import inspect
import typing
from typing import Any

import msgspec

from actors import Actor, SpawnFailed

from ..errors import ClassNotServed


def class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"



def resolve_actor_class(import_path: str, allowed_modules: list[str]) -> type[Actor]:
    """Import an actor class by ``module:QualName``, only from ``allowed_modules`` (or below)."""
    module_name, _, qualname = import_path.partition(":")
    if not module_name or not qualname:
        raise ClassNotServed(import_path, allowed_modules)
    if not any(module_name == m or module_name.startswith(m + ".") for m in allowed_modules):
        raise ClassNotServed(import_path, allowed_modules)
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise SpawnFailed(import_path, "", f"{module_name} has no attribute {qualname!r}")
    if not (isinstance(obj, type) and issubclass(obj, Actor)):
        raise SpawnFailed(import_path, "", f"{import_path} is not an Actor subclass")
    return obj



_constructors: dict[type, tuple[inspect.Signature, dict[str, Any]]] = {}


def _constructor(cls: type[Actor]) -> tuple[inspect.Signature, dict[str, Any]]:
    """``cls``'s signature and the annotated types of its plain parameters, read once per
    class (``inspect.signature`` costs more than the rest of a spawn on a worker)."""
    found = _constructors.get(cls)
    if found is not None:
        return found
    signature = inspect.signature(cls)
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:
        hints = {}
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    typed = {name: hint for name, hint in hints.items()
             if name in signature.parameters and signature.parameters[name].kind not in variadic}
    _constructors[cls] = signature, typed
    return signature, typed


def instantiate(cls: type[Actor], args: list[Any], kwargs: dict[str, Any]) -> Actor:
    """Call ``cls(*args, **kwargs)``, converting each argument to its annotated type."""
    try:
        signature, hints = _constructor(cls)
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise SpawnFailed(class_path(cls), "", f"bad arguments: {exc}") from None
    for name, value in list(bound.arguments.items()):
        hint = hints.get(name)
        if hint is None:
            continue
        try:
            bound.arguments[name] = msgspec.convert(value, hint)
        except (msgspec.ValidationError, TypeError) as exc:
            raise SpawnFailed(class_path(cls), "", f"argument {name!r}: {exc}") from None
    return cls(*bound.args, **bound.kwargs)
