"""Image-text search over a collection: an embedding index in the workspace and hybrid search.

An index lives in ``ws.dir("index", name)``: ``vectors.npy`` (float32, one unit vector per
image, from the profile's ``embedder`` engine), ``detections.npz`` (every image's detected
objects, from the profile's ``detector`` engine: ``builder.tools.detections``), ``items.json``
(path and content hash per row) and ``meta.json`` (which engines and versions made them). Search
runs through a faiss ``IndexFlatIP`` built from the vectors when the index is opened (exact
inner-product search; 10,000 x 128 floats is 5 MB).

``build_index`` is incremental: images whose content hash is already indexed are skipped, so
re-running it after adding files embeds and detects only the new ones (an index made before
detections were stored gets them for its known images too). Unreadable or corrupt images are
skipped and counted (``IndexResult.corrupt``). Embeddings and detections are computed locally
in batches with a progress bar, or on Ray Data (``runner="ray"``) for large collections.

Search: ``search_text`` ranks by embedding similarity alone, or re-ranks a shortlist of
``shortlist`` candidates with a verifier (any ``callable(image, text) -> score``). Hybrid
search by reading the query into a meaning tree and evaluating it over the stored detections of
every image lives in ``builder.methods.tree_search.search_read``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from builder.core.atomic import atomic_write_bytes, atomic_write_json
from builder.core.errors import UserError
from builder.core.images import ImageError, decode_image, read_image_bytes
from builder.core.workspace import Workspace
from builder.tools.detections import DETECTIONS_FILE, ObjectTable, detect_objects
from builder.tools.profile import build_engines

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
INDEX_FORMAT = 2  # 2: detections.npz and meta["detector"] (a format-1 index gets them at its next build)
Verifier = Callable[[np.ndarray, str], float]


class SearchError(UserError, ValueError):
    """An index that is missing, was built by another engine, or a query that cannot run."""


@dataclass
class IndexResult:
    """What one ``build_index`` call did."""

    name: str
    total: int  # images in the index afterwards
    added: int
    already_indexed: int
    corrupt: list[str] = field(default_factory=list)  # paths skipped: unreadable or not an image
    seconds: float = 0.0
    runner: str = "local"
    objects: int = 0  # detected objects stored for the whole index (0 without a detector)
    redetected: int = 0  # known images whose objects were detected now (an index made before detections)

    def summary(self) -> str:
        """One line for the user: what was embedded or skipped, and how many images the index holds."""
        msg = (f"index {self.name!r}: {self.added} new image(s) embedded, {self.already_indexed} already indexed, "
               f"{len(self.corrupt)} corrupt or unreadable image(s) skipped; {self.total} in the index "
               f"with {self.objects} detected object(s) ({self.seconds:.1f}s)")
        if self.redetected:
            msg += f"; objects detected in {self.redetected} image(s) indexed before detections were stored"
        return msg


@dataclass
class Hit:
    """One search result: an image (text->image) or a text (image->text)."""

    rank: int
    item: str  # image path, or the text
    score: float  # final score (verifier's when verified, else embedding similarity)
    similarity: float  # embedding inner product
    verified: float | None = None  # the verifier's score, when hybrid


def image_files(source: str | Path) -> list[Path]:
    """Image files under ``source`` (a folder, searched recursively, or one file), sorted."""
    src = Path(source)
    if src.is_file():
        return [src.resolve()]
    if not src.is_dir():
        raise SearchError(f"{source}: no such folder or image file")
    return sorted(p.resolve() for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is in the ml extra
        raise SearchError("image search needs faiss-cpu: install visforge[ml]") from None
    return faiss


class SearchIndex:
    """An embedding index in a workspace folder; ``search_text`` / ``search_image`` query it."""

    def __init__(self, folder: Path, meta: dict[str, Any], items: list[dict], vectors: np.ndarray,
                 objects: ObjectTable | None = None):
        self.folder = folder
        self.meta = meta
        self.items = items
        self.vectors = vectors
        self.objects = objects  # detected objects per row; None for an index without a detector
        self._index = None
        self.evaluator = None  # builder.methods.tree_search.TableEval over ``objects``, made on first search

    # ---- storage ----------------------------------------------------------------------------
    @classmethod
    def folder_for(cls, ws: Workspace, name: str) -> Path:
        """The folder of index ``name`` in workspace ``ws``."""
        return ws.dir("index", name)

    @classmethod
    def open(cls, ws: Workspace, name: str = "default") -> SearchIndex:
        """Load index ``name`` from ``ws``; a missing or inconsistent index is a ``SearchError``."""
        folder = ws.root / "index" / name
        if not (folder / "meta.json").is_file():
            raise SearchError(f"{ws.root}: no index {name!r}; build it with `visforge index IMAGES --workspace ...`")
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        items = json.loads((folder / "items.json").read_text(encoding="utf-8"))
        vectors = np.load(folder / "vectors.npy") if items else np.zeros((0, meta["dim"]), np.float32)
        if len(vectors) != len(items):
            raise SearchError(f"{folder}: {len(items)} items but {len(vectors)} vectors; rebuild the index")
        objects = None
        if meta.get("detector") and (folder / DETECTIONS_FILE).is_file():
            objects = ObjectTable.load(folder / DETECTIONS_FILE)
            if objects.n_images != len(items):
                raise SearchError(f"{folder}: {len(items)} items but detections for {objects.n_images}; "
                                  "rebuild the index")
        return cls(folder, meta, items, vectors, objects)

    def save(self) -> None:
        """Write vectors, items and meta atomically; the faiss index is rebuilt at the next search."""
        import io

        buf = io.BytesIO()
        np.save(buf, self.vectors.astype(np.float32))
        atomic_write_bytes(self.folder / "vectors.npy", buf.getvalue())
        atomic_write_json(self.folder / "items.json", self.items)
        if self.objects is not None:
            self.objects.save(self.folder / DETECTIONS_FILE)
        atomic_write_json(self.folder / "meta.json", {**self.meta, "count": len(self.items)})
        self._index = None
        self.evaluator = None

    def __len__(self) -> int:
        return len(self.items)

    # ---- search -----------------------------------------------------------------------------
    @property
    def faiss_index(self):
        """An exact inner-product faiss index over the vectors, built on first use."""
        if self._index is None:
            faiss = _faiss()
            index = faiss.IndexFlatIP(int(self.meta["dim"]))
            if len(self.vectors):
                index.add(np.ascontiguousarray(self.vectors, dtype=np.float32))
            self._index = index
        return self._index

    def nearest(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, row indices) of the ``k`` nearest images for each query row."""
        q = np.ascontiguousarray(np.atleast_2d(query), dtype=np.float32)
        k = min(k, len(self.items))
        if k <= 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        return self.faiss_index.search(q, k)

    def path(self, row: int) -> Path:
        """The image file of index row ``row``."""
        return Path(self.items[row]["path"])


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def check_embedder(meta: dict, embedder) -> None:
    """Raise ``SearchError`` when ``embedder`` is not the engine (and version) that made the index's vectors."""
    if meta.get("backend_id") != embedder.backend_id or meta.get("version") != embedder.version:
        raise SearchError(
            f"the index was built with {meta.get('backend_id')} (version {meta.get('version')}), the profile's "
            f"embedder is {embedder.backend_id} (version {embedder.version}); rebuild with --rebuild or use "
            "the same profile")


def _engine_id(engine) -> dict | None:
    return None if engine is None else {"backend_id": engine.backend_id, "version": engine.version}


def _check_detector(meta: dict, detector) -> None:
    had = meta.get("detector")
    if had and had != _engine_id(detector):
        now = _engine_id(detector) or {"backend_id": "no detector", "version": "-"}
        raise SearchError(
            f"the index's objects were detected with {had['backend_id']} (version {had['version']}), the "
            f"profile's detector is {now['backend_id']} (version {now['version']}); rebuild with --rebuild "
            "or use the same profile")


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="img")


@dataclass
class _Embedded:
    """What embedding (and detecting) a list of paths gave: rows of ``paths`` that worked, their
    vectors and objects, and the paths that could not be read."""

    ok: list[int]
    vectors: np.ndarray
    objects: ObjectTable | None
    corrupt: list[str]


def _embed_local(embedder, detector, paths: list[Path], batch_size: int, progress: bool) -> _Embedded:
    """Embed (and, with a detector, detect objects in) each readable image of ``paths``."""
    ok, vecs, corrupt, found, widths = [], [], [], [], []
    with _progress(len(paths), progress, "embedding") as bar:
        for s in range(0, len(paths), batch_size):
            chunk, idx = [], []
            for i in range(s, min(len(paths), s + batch_size)):
                try:
                    chunk.append(decode_image(read_image_bytes(paths[i]), str(paths[i])))
                    idx.append(i)
                except (ImageError, OSError, ValueError):
                    corrupt.append(str(paths[i]))
            if chunk:
                if embedder is not None:
                    vecs.append(np.asarray(embedder.embed_images(chunk), np.float32))
                if detector is not None:
                    found += [detect_objects(detector, im) for im in chunk]
                    widths += [im.shape[1] for im in chunk]
                ok += idx
            bar.update(min(len(paths), s + batch_size) - s)
    dim = vecs[0].shape[1] if vecs else 0
    objects = ObjectTable.from_images(found, widths) if detector is not None else None
    return _Embedded(ok, np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32), objects, corrupt)


def _open_or_new(ws: Workspace, name: str, embedder, detector, profile, rebuild: bool) -> SearchIndex:
    folder = SearchIndex.folder_for(ws, name)
    if (folder / "meta.json").is_file() and not rebuild:
        index = SearchIndex.open(ws, name)
        check_embedder(index.meta, embedder)
        _check_detector(index.meta, detector)
        return index
    meta = {"format": INDEX_FORMAT, "backend_id": embedder.backend_id, "version": embedder.version,
            "dim": int(embedder.dim), "profile": profile if isinstance(profile, str) else "<dict>",
            "detector": _engine_id(detector)}
    objects = ObjectTable.empty() if detector is not None else None
    return SearchIndex(folder, meta, [], np.zeros((0, int(embedder.dim)), np.float32), objects)


def _detect_known(index: SearchIndex, detector, batch_size: int, progress: bool) -> tuple[int, list[str]]:
    """Detect the objects of every image of an index made before detections were stored (an image
    no longer readable gets none and is named among the corrupt ones)."""
    if detector is None or index.objects is not None:
        return 0, []
    paths = [Path(it["path"]) for it in index.items]
    done = _embed_local(None, detector, paths, batch_size, progress)
    found, ok = done.objects, np.array(done.ok, np.int64)  # ``ok`` ascends: objects are in row order
    counts, width = np.zeros(len(paths), np.int32), np.ones(len(paths), np.float32)
    counts[ok], width[ok] = found.counts, found.width
    table = ObjectTable(counts, width, found.box, found.score, found.color, found.shape, found.size)
    index.objects = table
    index.meta["detector"] = _engine_id(detector)
    index.meta["format"] = INDEX_FORMAT
    return len(done.ok), done.corrupt


def build_index(ws: Workspace, source: str | Path | Sequence[str | Path], name: str = "default",
                profile: str | dict = "shapes", runner: str = "local", batch_size: int = 64,
                workers: int = 2, progress: bool = True, rebuild: bool = False, embedder=None,
                detector=None) -> IndexResult:
    """Index the images under ``source`` (a folder, a file, or a list of them) into ``ws``.

    Each image is embedded by the profile's embedder and its objects detected by the profile's
    detector (when the profile has one; ``embedder``/``detector`` given here replace the
    profile's). Incremental: images whose content is already in the index are skipped (a moved
    file keeps its row and gets its new path). ``runner`` "ray" embeds and detects on a Ray Data
    actor pool of ``workers`` actors, each building the profile's engines.
    """
    t0 = time.perf_counter()
    sources = [source] if isinstance(source, (str, Path)) else list(source)
    paths = [p for s in sources for p in image_files(s)]
    if embedder is None or detector is None:
        engines = build_engines(profile)
        embedder = embedder if embedder is not None else engines.embedder
        detector = detector if detector is not None else engines.detector
    if embedder is None:
        raise SearchError("the engine profile has no embedder engine")
    index = _open_or_new(ws, name, embedder, detector, profile, rebuild)
    redetected, corrupt = _detect_known(index, detector, batch_size, progress)
    known = {it["sha"]: i for i, it in enumerate(index.items)}
    new_paths, new_shas, already, dups = [], [], 0, {}
    for p in paths:
        try:
            sha = _digest(p.read_bytes())
        except OSError:
            corrupt.append(str(p))
            continue
        if sha in known:
            index.items[known[sha]]["path"] = str(p)
            already += 1
        elif sha not in dups:
            dups[sha] = []
            new_paths.append(p)
            new_shas.append(sha)
        else:
            dups[sha].append(str(p))  # the same content twice in this batch: indexed once
    if runner == "local":
        done = _embed_local(embedder, detector, new_paths, batch_size, progress)
    elif runner == "ray":
        from builder.run.ray import embed_images_ray

        done = _Embedded(*embed_images_ray([str(p) for p in new_paths], profile, workers=workers,
                                           batch_size=batch_size, progress=progress,
                                           detect=detector is not None))
    else:
        raise SearchError(f"unknown runner {runner!r}; use 'local' or 'ray'")
    corrupt += done.corrupt
    bad_shas = {new_shas[i] for i in set(range(len(new_paths))) - set(done.ok)}
    for sha, copies in dups.items():
        if sha in bad_shas:
            corrupt += copies
        else:
            already += len(copies)
    if len(done.ok):
        index.items += [{"path": str(new_paths[i]), "sha": new_shas[i]} for i in done.ok]
        index.vectors = np.concatenate([index.vectors, done.vectors]) if len(index.vectors) else done.vectors
        if index.objects is not None:
            index.objects = index.objects.extend(done.objects)
    index.save()
    return IndexResult(name, len(index), len(done.ok), already, corrupt, round(time.perf_counter() - t0, 3), runner,
                       objects=len(index.objects) if index.objects is not None else 0, redetected=redetected)


# ---- hybrid search ---------------------------------------------------------------------------
class MatcherVerifier:
    """A verifier from a matcher engine: its score of (image, text); ``many`` scores many texts."""

    def __init__(self, matcher):
        self.matcher = matcher

    def __call__(self, image: np.ndarray, text: str) -> float:
        """The matcher's score of ``text`` on ``image``."""
        return float(self.matcher.scores(image, [text])[0])

    def many(self, image: np.ndarray, texts: list[str]) -> list[float]:
        """The matcher's scores of all ``texts`` on ``image`` in one call, in order."""
        return [float(s) for s in self.matcher.scores(image, list(texts))]


def _rerank(cands: list[tuple[str, float]], scores: list[float], k: int) -> list[Hit]:
    order = sorted(range(len(cands)), key=lambda i: (-scores[i], -cands[i][1]))[:k]
    return [Hit(r + 1, cands[i][0], float(scores[i]), float(cands[i][1]), float(scores[i]))
            for r, i in enumerate(order)]


def search_text(index: SearchIndex, embedder, query: str, k: int = 10, verifier: Verifier | None = None,
                shortlist: int = 100) -> list[Hit]:
    """Text->image: the ``k`` best images for ``query``; with a verifier, hybrid over ``shortlist``."""
    if not query or not query.strip():
        raise SearchError("the search query is empty")
    if k < 1:
        raise SearchError(f"k must be at least 1, got {k}")
    check_embedder(index.meta, embedder)
    q = np.asarray(embedder.embed_texts([query]), np.float32)
    sims, rows = index.nearest(q, max(k, shortlist) if verifier else k)
    cands = [(str(index.path(int(r))), float(s)) for s, r in zip(sims[0], rows[0], strict=True) if r >= 0]
    if verifier is None:
        return [Hit(i + 1, p, s, s) for i, (p, s) in enumerate(cands)]
    scores = [verifier(decode_image(read_image_bytes(p), p), query) for p, _ in cands]
    return _rerank(cands, scores, k)


def search_image(image: np.ndarray, texts: list[str], embedder, k: int = 10, verifier: Verifier | None = None,
                 shortlist: int = 100, text_vectors: np.ndarray | None = None) -> list[Hit]:
    """Image->text: the ``k`` texts that best describe ``image`` (hybrid with a verifier)."""
    if not texts:
        raise SearchError("image->text search needs candidate texts")
    tv = np.asarray(text_vectors if text_vectors is not None else embedder.embed_texts(list(texts)), np.float32)
    iv = np.asarray(embedder.embed_images([image]), np.float32)[0]
    sims = tv @ iv
    n = min(len(texts), max(k, shortlist) if verifier else k)
    top = np.argsort(-sims, kind="stable")[:n]
    cands = [(texts[i], float(sims[i])) for i in top]
    if verifier is None:
        return [Hit(r + 1, t, s, s) for r, (t, s) in enumerate(cands)]
    many = getattr(verifier, "many", None)
    scores = many(image, [t for t, _ in cands]) if many else [verifier(image, t) for t, _ in cands]
    return _rerank(cands, scores, k)


def hits_json(hits: list[Hit]) -> list[dict]:
    """The hits as plain dicts (for JSON output)."""
    return [asdict(h) for h in hits]
