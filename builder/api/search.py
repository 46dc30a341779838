"""Image search over a workspace: build an index, text->image and image->text search, and
turn hits into task examples."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from builder.api.runtime import Runtime
from builder.api.tasks import card_from_data, parse_expected_text, save_task
from builder.core.errors import UserError
from builder.core.images import content_name
from builder.core.taskcard import Example, OutputKind, TaskCard, new_example_ids, normalise_expected
from builder.core.workspace import Workspace
from builder.methods import image_index as _search
from builder.methods.image_index import Hit, IndexResult
from builder.methods.tree_search import Reading, SearchHits, search_read
from builder.tools.profile import build_engines

__all__ = ["Hit", "IndexResult", "Reading", "SearchHits", "add_search_results", "index_images", "search_captions",
           "search_hits_in_task", "search_images"]

def _engines(profile: str | dict, runtime: Runtime | None):
    return runtime.engines if runtime is not None else build_engines(profile)


def index_images(ws: Workspace, source: str | Path | Sequence[str | Path], name: str = "default",
                 profile: str | dict = "shapes", runner: str = "local", workers: int = 2, progress: bool = True,
                 rebuild: bool = False, runtime: Runtime | None = None) -> IndexResult:
    """Build or extend the workspace's image index ``name`` over a folder (or dataset) of images.

    Each image is embedded (the profile's embedder) and its objects detected and stored (the
    profile's detector), so searches read over what was detected. Incremental: only images not
    yet indexed are embedded and detected; corrupt files are skipped and counted in the result.
    ``runner="ray"`` embeds and detects on a Ray Data actor pool.
    """
    engines = _engines(profile, runtime) if runtime is not None else None
    return _search.build_index(ws, source, name=name, profile=runtime.profile if runtime else profile,
                               runner=runner, workers=workers, progress=progress, rebuild=rebuild,
                               embedder=engines.embedder if engines else None,
                               detector=engines.detector if engines else None)


def search_images(ws: Workspace, query: str, k: int = 10, name: str = "default", profile: str | dict = "shapes",
                  verify: bool | Callable = False, shortlist: int = 100, runtime: Runtime | None = None) -> SearchHits:
    """Text->image search over the workspace index: the ``k`` best images for ``query``.

    ``verify=True`` (hybrid search) reads the query into a meaning tree (the same language and
    parser as task requests) and evaluates it over the objects stored for *every* indexed image:
    images where it holds come first, embedding similarity orders the rest. A query that cannot
    be read gets no hits; ``hits.refusal`` names the words. ``hits.reading`` says how it was read.
    ``verify=False`` ranks by embedding similarity alone; a callable ``verify(image, text) -> score``
    re-ranks an embedding shortlist of ``shortlist`` images with it (e.g. a program's score).
    """
    engines = _engines(profile, runtime)
    index = _search.SearchIndex.open(ws, name)
    if verify is True:
        return search_read(index, engines.embedder, query, k)
    return SearchHits(_search.search_text(index, engines.embedder, query, k, verify or None, shortlist))


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


def search_hits_in_task(ws: Workspace, hits: Sequence[Hit | str | Path]) -> dict[str, str]:
    """Which ``hits`` are already examples of the task: {hit image path (as given): example id}
    (an example without an id maps to ""). Images are compared by content, as the workspace
    stores them."""
    card = ws.load_task()
    by_image = {p: ex.id or "" for ex in card.examples for p in ex.images}
    out = {}
    for hit in hits:
        path = _hit_path(hit)
        if path.is_file():
            rel = "images/" + content_name(path.read_bytes(), path.suffix)
            if rel in by_image:
                out[hit.item if isinstance(hit, Hit) else str(hit)] = by_image[rel]
    return out


def add_search_results(ws: Workspace, hits: Sequence[Hit | str | Path], expected: Any = None, query: str = "",
                       answers: Sequence[Any] | Mapping[Any, Any] | None = None) -> TaskCard:
    """Add the images of search ``hits`` to the workspace's task as examples, each with its own answer.

    ``answers`` gives each hit its expected output: a list aligned with ``hits``, or a mapping
    from a hit's image path to its answer. Typed text is read as the task card form reads it
    ("2", "yes", "[[1, 2, 30, 40]]"). ``expected`` instead gives every hit the same answer; use it
    only when that answer truly holds for each of them. Every answer is checked against the
    card's output kind first: a hit without an answer, or with one that does not fit, is an
    error naming the hit, and nothing is saved.

    The images are copied into the workspace; each new example gets an id (``sr0007``) so it can
    be edited (``update_example``) or deleted (``delete_example``). Images already among the
    examples are skipped (``search_hits_in_task`` says which). ``query`` is the examples' query
    (default: the task's first query). The previous card is kept in ``history/``
    (``task_history``, ``restore_task``). Returns the saved card.
    """
    hits = list(hits)
    per_hit = _answers_per_hit(hits, expected, answers)
    card = ws.load_task()
    if not query and card.examples:
        query = card.examples[0].query
    have = {p for ex in card.examples for p in ex.images}
    problems, new = [], []
    for i, (hit, answer) in enumerate(zip(hits, per_hit, strict=True)):
        path, label = _hit_path(hit), _hit_label(i, hit)
        try:
            value = _check_answer(card.output, path, query, answer)
        except ValueError as e:
            problems.append(f"{label}: {e}")
            continue
        rel = "images/" + content_name(path.read_bytes(), path.suffix)
        if rel not in have:
            have.add(rel)
            new.append((path, value))
    if problems:
        raise UserError("no search results were added: " + "; ".join(problems))
    if not new:
        return card
    data = card.model_dump(mode="json", exclude_none=True)
    ids = new_example_ids(card.examples, "sr", len(new))
    data["examples"] += [{"id": ex_id, "image": str(path.resolve()), "query": query, "expected": value}
                         for ex_id, (path, value) in zip(ids, new, strict=True)]
    # save_task decodes each image, copies it in and archives the previous card in history/.
    save_task(ws.root, card_from_data(data), reason=f"added {len(new)} search result(s) {', '.join(ids)}")
    return ws.load_task()


def _hit_path(hit: Hit | str | Path) -> Path:
    return Path(hit.item if isinstance(hit, Hit) else hit)


def _hit_label(i: int, hit: Hit | str | Path) -> str:
    name = _hit_path(hit).name
    return f"hit #{hit.rank} ({name})" if isinstance(hit, Hit) else f"hit {i + 1} ({name})"


def _answers_per_hit(hits: list, expected: Any, answers: Sequence[Any] | Mapping[Any, Any] | None) -> list[Any]:
    """One answer per hit, in the hits' order (None where a mapping gives a hit none)."""
    if answers is not None and expected is not None:
        raise UserError("give either answers (one per hit) or expected (one for all), not both")
    if answers is None:
        if expected is None:
            raise UserError("give each search hit its own expected answer (answers=[...] aligned with the hits)")
        return [expected] * len(hits)
    if isinstance(answers, Mapping):
        keyed = {_key(k): v for k, v in answers.items()}
        unknown = set(keyed) - {_key(h) for h in hits}
        if unknown:
            raise UserError(f"answers for images that are not among the hits: {', '.join(sorted(unknown))}")
        return [keyed.get(_key(h)) for h in hits]
    if isinstance(answers, (str, bytes)) or len(answers) != len(hits):
        n = "a text" if isinstance(answers, (str, bytes)) else f"{len(answers)} answers"
        raise UserError(f"answers must be a list with one answer per hit: got {n} for {len(hits)} hit(s)")
    return list(answers)


def _key(hit: Hit | str | Path) -> str:
    return str(_hit_path(hit).resolve())


def _check_answer(kind: OutputKind, path: Path, query: str, answer: Any) -> Any:
    """The answer in the card's canonical form; ValueError saying what is wrong otherwise."""
    if isinstance(answer, str):
        # A text task takes the words as typed; other kinds read them as the task form does.
        answer = (answer.strip() or None) if kind is OutputKind.text else parse_expected_text(answer)
    if answer is None:
        raise ValueError("no expected answer")
    if not path.is_file():
        raise ValueError("not an image file")
    return normalise_expected(kind, answer, Example(image=str(path), query=query, expected=answer))
