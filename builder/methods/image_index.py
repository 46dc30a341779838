"""Image-text search over a collection: an embedding index in the workspace and hybrid search.

An index lives in ``ws.dir("index", name)``: ``vectors.npy`` (float32, one unit vector per
image, from the profile's ``embedder`` engine), ``items.json`` (path, content hash, size per
row) and ``meta.json`` (which engine and version made the vectors). Search runs through a
faiss ``IndexFlatIP`` built from the vectors when the index is opened (exact inner-product
search; 10,000 x 128 floats is 5 MB).

``build_index`` is incremental: images whose content hash is already indexed are skipped, so
re-running it after adding files embeds only the new ones. Unreadable or corrupt images are
skipped and counted (``IndexResult.corrupt``). Embeddings are computed locally in batches
with a progress bar, or on Ray Data (``runner="ray"``) for large collections.

Hybrid search: the embeddings shortlist ``shortlist`` candidates; a verifier (the matcher
engine, or any ``callable(image, text) -> score``) scores each and the hits are re-ranked by
the verifier's score, embedding similarity breaking ties. This is how a precise query ("a red
circle left of a blue square") beats plain embedding similarity at a fraction of the cost of
scoring every image with the matcher.
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
from builder.tools.profile import build_engines

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
INDEX_FORMAT = 1
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

    def summary(self) -> str:
        """One line for the user: what was embedded or skipped, and how many images the index holds."""
        msg = (f"index {self.name!r}: {self.added} new image(s) embedded, {self.already_indexed} already indexed, "
               f"{len(self.corrupt)} corrupt or unreadable image(s) skipped; {self.total} in the index "
               f"({self.seconds:.1f}s)")
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

    def __init__(self, folder: Path, meta: dict[str, Any], items: list[dict], vectors: np.ndarray):
        self.folder = folder
        self.meta = meta
        self.items = items
        self.vectors = vectors
        self._index = None

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
        return cls(folder, meta, items, vectors)

    def save(self) -> None:
        """Write vectors, items and meta atomically; the faiss index is rebuilt at the next search."""
        import io

        buf = io.BytesIO()
        np.save(buf, self.vectors.astype(np.float32))
        atomic_write_bytes(self.folder / "vectors.npy", buf.getvalue())
        atomic_write_json(self.folder / "items.json", self.items)
        atomic_write_json(self.folder / "meta.json", {**self.meta, "count": len(self.items)})
        self._index = None

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


def _check_engine(meta: dict, embedder) -> None:
    if meta.get("backend_id") != embedder.backend_id or meta.get("version") != embedder.version:
        raise SearchError(
            f"the index was built with {meta.get('backend_id')} (version {meta.get('version')}), the profile's "
            f"embedder is {embedder.backend_id} (version {embedder.version}); rebuild with --rebuild or use "
            "the same profile")


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="img")


def _embed_local(embedder, paths: list[Path], batch_size: int, progress: bool) -> tuple[list[int], np.ndarray,
                                                                                         list[str]]:
    """(indices of ``paths`` embedded, vectors, corrupt paths)."""
    ok, vecs, corrupt = [], [], []
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
                vecs.append(np.asarray(embedder.embed_images(chunk), np.float32))
                ok += idx
            bar.update(min(len(paths), s + batch_size) - s)
    dim = vecs[0].shape[1] if vecs else 0
    return ok, (np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)), corrupt


def build_index(ws: Workspace, source: str | Path | Sequence[str | Path], name: str = "default",
                profile: str | dict = "shapes", runner: str = "local", batch_size: int = 64,
                workers: int = 2, progress: bool = True, rebuild: bool = False, embedder=None) -> IndexResult:
    """Index the images under ``source`` (a folder, a file, or a list of them) into ``ws``.

    Incremental: images whose content is already in the index are skipped (a moved file keeps
    its row and gets its new path). ``runner`` "ray" embeds on a Ray Data actor pool of
    ``workers`` actors, each building the profile's embedder.
    """
    t0 = time.perf_counter()
    sources = [source] if isinstance(source, (str, Path)) else list(source)
    paths = [p for s in sources for p in image_files(s)]
    if embedder is None:
        embedder = build_engines(profile).embedder
    if embedder is None:
        raise SearchError("the engine profile has no embedder engine")
    folder = SearchIndex.folder_for(ws, name)
    if (folder / "meta.json").is_file() and not rebuild:
        index = SearchIndex.open(ws, name)
        _check_engine(index.meta, embedder)
    else:
        meta = {"format": INDEX_FORMAT, "backend_id": embedder.backend_id, "version": embedder.version,
                "dim": int(embedder.dim), "profile": profile if isinstance(profile, str) else "<dict>"}
        index = SearchIndex(folder, meta, [], np.zeros((0, int(embedder.dim)), np.float32))
    known = {it["sha"]: i for i, it in enumerate(index.items)}
    new_paths, new_shas, already, corrupt, dups = [], [], 0, [], {}
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
        ok, vecs, bad = _embed_local(embedder, new_paths, batch_size, progress)
    elif runner == "ray":
        from builder.run.ray import embed_images_ray

        ok, vecs, bad = embed_images_ray([str(p) for p in new_paths], profile, workers=workers,
                                         batch_size=batch_size, progress=progress)
    else:
        raise SearchError(f"unknown runner {runner!r}; use 'local' or 'ray'")
    corrupt += bad
    bad_shas = {new_shas[i] for i in set(range(len(new_paths))) - set(ok)}
    for sha, copies in dups.items():
        if sha in bad_shas:
            corrupt += copies
        else:
            already += len(copies)
    if len(ok):
        index.items += [{"path": str(new_paths[i]), "sha": new_shas[i]} for i in ok]
        index.vectors = np.concatenate([index.vectors, vecs]) if len(index.vectors) else vecs
    index.save()
    return IndexResult(name, len(index), len(ok), already, corrupt, round(time.perf_counter() - t0, 3), runner)


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
    _check_engine(index.meta, embedder)
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
