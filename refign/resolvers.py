"""OmegaConf resolvers that the configs use; the entry points register them before Hydra composes."""

from __future__ import annotations

import hashlib

from omegaconf import OmegaConf

# file names may have 255 bytes; a sweep point's folder keeps its number, the start of its overrides and a hash
MAX_DIRNAME = 96


def short_dirname(overrides: str, limit: int = MAX_DIRNAME) -> str:
    """A sweep point's folder name from its overrides (``hydra.job.override_dirname``), cut to ``limit``
    characters plus a hash of the whole, so that a long override list still gives a valid, distinct name."""
    if len(overrides) <= limit:
        return overrides
    return f"{overrides[:limit]}-{hashlib.sha1(overrides.encode()).hexdigest()[:8]}"


def register() -> None:
    """Idempotent: every entry point calls it at import."""
    if not OmegaConf.has_resolver("dirname"):
        OmegaConf.register_new_resolver("dirname", short_dirname)
