"""Image search over a workspace: build an index, text->image and image->text search, and
turn hits into task examples."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from builder.api.runtime import Runtime
from builder.api.tasks import _import_image, card_from_data
from builder.core.errors import UserError
from builder.core.taskcard import TaskCard
from builder.core.workspace import Workspace
from builder.methods import image_index as _search
from builder.methods.image_index import Hit, IndexResult
from builder.tools.profile import build_engines

__all__ = ["Hit", "IndexResult", "add_search_results", "index_images", "search_captions", "search_images"]

def _engines(profile: str | dict, runtime: Runtime | None):
    return runtime.engines if runtime is not None else build_engines(profile)


def index_images(ws: Workspace, source: str | Path | Sequence[str | Path], name: str = "default",
                 profile: str | dict = "shapes", runner: str = "local", workers: int = 2, progress: bool = True,
                 rebuild: bool = False, runtime: Runtime | None = None) -> IndexResult:
    """Build or extend the workspace's image index ``name`` over a folder (or dataset) of images.

    Incremental: only images not yet indexed are embedded; corrupt files are skipped and
    counted in the result. ``runner="ray"`` embeds on a Ray Data actor pool.
    """
    embedder = _engines(profile, runtime).embedder if runtime is not None else None
    return _search.build_index(ws, source, name=name, profile=runtime.profile if runtime else profile,
                               runner=runner, workers=workers, progress=progress, rebuild=rebuild,
                               embedder=embedder)


def search_images(ws: Workspace, query: str, k: int = 10, name: str = "default", profile: str | dict = "shapes",
                  verify: bool | Callable = False, shortlist: int = 100, runtime: Runtime | None = None) -> list[Hit]:
    """Text->image search over the workspace index: the ``k`` best images for ``query``.

    ``verify=True`` re-ranks an embedding shortlist of ``shortlist`` images with the matcher
    engine (hybrid search); a callable ``verify(image, text) -> score`` re-ranks with it instead
    (e.g. a program's score).
    """
    engines = _engines(profile, runtime)
    verifier = _verifier(engines, verify)
    return _search.search_text(_search.SearchIndex.open(ws, name), engines.embedder, query, k, verifier, shortlist)


def search_captions(image: str | Path | Any, texts: Sequence[str], k: int = 10, profile: str | dict = "shapes",
                    verify: bool | Callable = False, shortlist: int = 100,
                    runtime: Runtime | None = None) -> list[Hit]:
    """Image->text search: the ``k`` texts of ``texts`` that best describe ``image`` (a path or array)."""
    from builder.core.images import load_image

    engines = _engines(profile, runtime)
    array = load_image(image) if isinstance(image, (str, Path)) else image
    return _search.search_image(array, list(texts), engines.embedder, k, _verifier(engines, verify), shortlist)


def _verifier(engines, verify):
    if verify is True:
        if engines.matcher is None:
            raise UserError("hybrid search needs a matcher engine in the profile")
        return _search.MatcherVerifier(engines.matcher)
    return verify or None


def add_search_results(ws: Workspace, hits: Sequence[Hit | str | Path], expected: Any, query: str = "") -> TaskCard:
    """Add the images of search ``hits`` to the workspace's task as examples with ``expected``.

    The images are copied into the workspace; ``expected`` is checked against the card's
    output kind (e.g. True for an "exists" task, a count, boxes). Images already among the
    examples are skipped. Returns the saved card (the previous one is kept in ``history/``).
    """
    card = ws.load_task()
    data = card.model_dump(mode="json", exclude_none=True)
    have = {p for ex in card.examples for p in ex.images}
    for hit in hits:
        path = Path(hit.item if isinstance(hit, Hit) else hit)
        rel = _import_image(ws, path)
        if rel in have:
            continue
        have.add(rel)
        data["examples"].append({"image": rel, "query": query or card.examples[0].query if card.examples else query,
                                 "expected": expected})
    new = card_from_data(data)
    ws.save_task(new, reason=f"added {len(data['examples']) - len(card.examples)} search result(s)")
    return new

