"""Imported once by the fork server that the HTTP server's engine workers are forked from
(``workers``): the engines' libraries are imported and the engines built here, so a worker that
replaces a stopped one starts in milliseconds. No model is loaded here (engines load them lazily;
each worker loads its own before it takes requests): torch's thread pools do not survive a fork.
This file is copied verbatim by ``visforge export``.
"""

from __future__ import annotations

import gc

from .runtime import build_engines, engine_profile

_ENGINES = build_engines(engine_profile())
# What exists now lives as long as the fork server: out of the collector's sight, so the workers'
# collections neither walk it (hundreds of thousands of objects once torch is imported) nor
# touch its pages (which the workers share with this process until written).
gc.freeze()


def engines():
    """The engines built when the fork server imported this module."""
    return _ENGINES
