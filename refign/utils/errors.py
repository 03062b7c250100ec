"""The error of a setting, and the checks of numeric settings that raise it where a configuration is read.

Hydra passes an override as the user typed it (``optim.lr=abc`` arrives as a string), so a setting is checked
before anything is built from it: the message names the key, rather than a ``TypeError`` deep inside PyTorch.
"""

from __future__ import annotations

from numbers import Real


class ConfigError(ValueError):
    """A setting with a bad value, or a configuration whose parts cannot work together."""


def check_number(key: str, value: object, minimum: float, strict: bool, whole: bool = False) -> None:
    """``value`` is a number (``whole``: an integer) ``> minimum`` (``strict``) or ``>= minimum``; else a
    ``ConfigError`` naming ``key``. Booleans are refused: YAML reads ``true`` as one, never meant as 1."""
    kind = "a whole number" if whole else "a number"
    is_number = isinstance(value, int if whole else Real) and not isinstance(value, bool)
    if not is_number or not (value > minimum if strict else value >= minimum):
        bound = f"{'>' if strict else '>='} {minimum:g}"
        raise ConfigError(f"{key}={value!r}: must be {kind} {bound}")
