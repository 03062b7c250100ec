"""OmegaConf resolvers that the configs use, registered on `import refign`, before Hydra composes."""

from __future__ import annotations

import hashlib
from importlib import resources

from omegaconf import OmegaConf

# file names may have 255 bytes; a sweep point's folder keeps its number, the start of its overrides and a hash
MAX_DIRNAME = 96


# characters of Hydra's override grammar that a path may not hold unquoted (``=`` ends the key, ``,`` makes a
# sweep, brackets and braces a list or dict): replaced, so that ``checkpoint=<sweep point>/...`` can be typed as is
GRAMMAR_CHARS = str.maketrans("=,", "-_", "[]{}'\" ")


def short_dirname(overrides: str, limit: int = MAX_DIRNAME) -> str:
    """A sweep point's folder name from its overrides (``hydra.job.override_dirname``): ``key-value`` pairs
    joined by ``_``, without the characters the override grammar reserves, cut to ``limit`` characters plus a
    hash of the whole, so that a long override list still gives a valid, distinct name."""
    name = overrides.translate(GRAMMAR_CHARS)
    if len(name) <= limit:
        return name
    return f"{name[:limit]}-{hashlib.sha1(overrides.encode()).hexdigest()[:8]}"


def package_path(name: str) -> str:
    """A folder shipped inside the installed package (``${package_path:assets}``), found through the
    package rather than the working directory, so that a run started anywhere finds the files that come with
    the code."""
    return str(resources.files("refign").joinpath(name))


def register() -> None:
    """Idempotent; called once when the package is imported (refign/__init__.py)."""
    if not OmegaConf.has_resolver("dirname"):
        OmegaConf.register_new_resolver("dirname", short_dirname)
    if not OmegaConf.has_resolver("package_path"):
        OmegaConf.register_new_resolver("package_path", package_path)
