"""Image-text search: the shapes dual encoder (trained at reduced size), the hf embedder on a tiny
CLIP, the workspace index (build, incremental update, corrupt files), hybrid re-ranking, the
CLI as a real process, adding results as task examples, and Ray embedding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("faiss")

from builder import add_search_results, ensure_shapes_workspace, index_images, search_captions, search_images
from builder.domains.shapes.world.captions import PATTERNS, clauses_hold, distinctive_caption, render_clauses
from builder.domains.shapes.world.scene import render_scene, sample_scene
from builder.methods.image_index import SearchError, SearchIndex, build_index, search_text
from builder.tools.backends.shapes import ShapesEmbedder
from builder.tools.engines import Embedder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """The shapes dual encoder trained for a few steps (the real training command, reduced)."""
    from builder.domains.shapes.training.embed import train_command

    out = tmp_path_factory.mktemp("embed") / "w"
    record = train_command(out, n_scenes=64, steps=3, batch_size=16, threads=1, log_every=1, max_minutes=None)
    assert record["steps_done"] == 3
    return out


@pytest.fixture(scope="module")
def profile(weights, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("profile") / "search.yaml"
    path.write_text(yaml.safe_dump({"embedder": {"backend": "shapes", "weights": str(weights)},
                                    "detector": {"backend": "shapes"}, "matcher": {"backend": "shapes"}}))
    return str(path)


def _images(folder: Path, seeds, corrupt: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for s in seeds:
        render_scene(sample_scene(s)).save(folder / f"scene{s:03d}.png")
    for i in range(corrupt):
        (folder / f"broken{i}.png").write_bytes(b"this is not a PNG file")
    return folder


@pytest.fixture()
def ws(tmp_path):
    return ensure_shapes_workspace(tmp_path / "ws", n=2)


def test_shapes_embedder_protocol(weights):
    emb = ShapesEmbedder(weights)
    assert isinstance(emb, Embedder)
    images = [np.asarray(render_scene(sample_scene(i))) for i in range(3)]
    iv, tv = emb.embed_images(images), emb.embed_texts(["There is a red circle.", "Two blue squares."])
    assert iv.shape == (3, emb.dim) and tv.shape == (2, emb.dim) and iv.dtype == np.float32
    assert np.allclose(np.linalg.norm(iv, axis=1), 1, atol=1e-4)
    assert np.allclose(emb.embed_texts(["There is a red circle."]), tv[:1], atol=1e-5)


def test_captions_keep_heldout_phrasings_out_of_training():
    from builder.domains.shapes.training.embed import build_vocab

    vocab = set(build_vocab())
    heldout_words = {w for k in PATTERNS["heldout"] for p in PATTERNS["heldout"][k]
                     for w in p.lower().replace(".", " ").split() if "{" not in w}
    assert {"picture", "contains", "see", "shows", "exactly"} <= heldout_words
    assert not ({"picture", "contains", "see", "shows", "exactly"} & vocab)
    scenes = [sample_scene(i) for i in range(40)]
    rng = np.random.default_rng(0)
    clauses = distinctive_caption(scenes, 0, rng)
    assert clauses and clauses_hold(clauses, scenes[0]) is True
    assert all(clauses_hold(clauses, s) is False for s in scenes[1:])
    assert render_clauses(clauses, rng, "heldout")


def test_index_build_incremental_and_corrupt(ws, weights, tmp_path):
    emb = ShapesEmbedder(weights)
    folder = _images(tmp_path / "photos", range(5), corrupt=2)
    res = build_index(ws, folder, embedder=emb, progress=False)
    assert (res.added, res.already_indexed, len(res.corrupt), res.total) == (5, 0, 2, 5)
    assert "2 corrupt or unreadable image(s) skipped" in res.summary()
    _images(folder, range(5, 8))
    res = build_index(ws, folder, embedder=emb, progress=False)
    assert (res.added, res.already_indexed, res.total) == (3, 5, 8)
    index = SearchIndex.open(ws)
    assert len(index) == 8 and index.vectors.shape == (8, emb.dim)
    # only new images were embedded: the first five rows are unchanged
    hits = search_text(index, emb, "There is a red circle.", k=4)
    assert [h.rank for h in hits] == [1, 2, 3, 4]
    assert all(Path(h.item).is_file() for h in hits)
    assert hits == sorted(hits, key=lambda h: -h.score)


def test_engine_mismatch_is_refused(ws, weights, tmp_path):
    folder = _images(tmp_path / "p", range(2))
    build_index(ws, folder, embedder=ShapesEmbedder(weights), progress=False)

    class Other(ShapesEmbedder):
        version = "other"

    other = Other(weights)
    other.version = "other"
    with pytest.raises(SearchError, match="rebuild"):
        build_index(ws, folder, embedder=other, progress=False)
    assert build_index(ws, folder, embedder=other, progress=False, rebuild=True).added == 2


def test_hybrid_reranks_with_a_verifier(ws, profile, tmp_path):
    folder = _images(tmp_path / "p", range(6))
    index_images(ws, folder, profile=profile, progress=False)
    favourite = str((folder / "scene004.png").resolve())
    hits = search_images(ws, "a red circle", k=3, profile=profile, shortlist=6,
                         verify=lambda image, text: 1.0 if image.sum() == favourite_sum else 0.0)
    assert hits[0].item == favourite and hits[0].verified == 1.0
    read_hits = search_images(ws, "a red circle", k=6, profile=profile, verify=True, shortlist=6)
    assert all(h.verified is not None for h in read_hits) and read_hits.refusal is None
    assert [h.score for h in read_hits] == sorted((h.score for h in read_hits), reverse=True)
    # the query is read as "there is a red circle": exactly the images with one score 1, first
    assert {h.item for h in read_hits if h.score == 1.0} == {h.item for h in read_hits if _has_red_circle(h.item)}
    texts = ["There is a red circle.", "There are 2 blue squares.", "a green star"]
    caps = search_captions(folder / "scene000.png", texts, k=2, profile=profile, verify=True)
    assert len(caps) == 2 and {c.item for c in caps} <= set(texts)


favourite_sum = int(np.asarray(render_scene(sample_scene(4))).sum())


def test_add_results_as_task_examples(ws, profile, tmp_path):
    folder = _images(tmp_path / "p", range(3))
    index_images(ws, folder, profile=profile, progress=False)
    before = len(ws.load_task().examples)
    hits = search_images(ws, "red objects", k=2, profile=profile)
    card = add_search_results(ws, hits, expected=1)
    assert len(card.examples) == before + 2
    assert all(ws.resolve_image(p).is_file() for ex in card.examples for p in ex.images)
    assert len(add_search_results(ws, hits, expected=1).examples) == before + 2  # no duplicates


def test_cli_index_and_search_as_processes(ws, profile, tmp_path):
    folder = _images(tmp_path / "p", range(4), corrupt=1)
    cli = [sys.executable, "-m", "builder.interfaces.cli"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(cli + ["index", str(folder), "--workspace", str(ws.root), "--profile", profile,
                                "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "4 new image(s) embedded" in out.stdout and "1 corrupt or unreadable image(s) skipped" in out.stdout
    assert "broken0.png" in out.stdout
    out = subprocess.run(cli + ["search", "There is a red circle.", "--workspace", str(ws.root), "--k", "3",
                                "--profile", profile, "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)
    assert len(hits) == 3 and all(Path(h["item"]).is_file() for h in hits)
    texts = tmp_path / "texts.txt"
    texts.write_text("There is a red circle.\nThere are 2 blue squares.\n")
    out = subprocess.run(cli + ["search", "--image", str(folder / "scene000.png"), "--texts", str(texts),
                                "--k", "1", "--profile", profile], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "There " in out.stdout
    out = subprocess.run(cli + ["search", "x", "--workspace", str(tmp_path / "nope")], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 2 and "error:" in out.stderr
    out = subprocess.run(cli + ["search", "is the stock price up today", "--workspace", str(ws.root),
                                "--profile", profile], capture_output=True, text=True, env=env, timeout=300)
    # the reason names words of the request it could not read
    assert out.returncode == 1 and "no results: cannot" in out.stderr
    assert any(f"'{w}" in out.stderr or f" {w}'" in out.stderr for w in ("stock", "price", "up", "today")), out.stderr
    assert out.stdout == ""


def test_hf_embedder_on_tiny_clip(tmp_path, ws):
    pytest.importorskip("transformers")
    import tiny_models

    from builder.tools.backends.hf import HFEmbedder, HFMatcher

    path = str(tiny_models.build_clip(tmp_path / "clip"))
    emb = HFEmbedder(path)
    assert isinstance(emb, Embedder)
    images = [np.asarray(render_scene(sample_scene(i))) for i in range(3)]
    iv, tv = emb.embed_images(images), emb.embed_texts(["a red circle", "two blue squares"])
    assert iv.shape == (3, emb.dim) == (3, 16) and tv.shape == (2, 16)
    assert np.allclose(np.linalg.norm(iv, axis=1), 1, atol=1e-5)
    # inner products are the matcher's logits divided by CLIP's logit scale
    logits = np.array(HFMatcher(path).scores(images[0], ["a red circle", "two blue squares"]))
    scale = logits / (tv @ iv[0])
    assert np.allclose(scale, scale[0], rtol=1e-3)
    # and it indexes and searches through a profile
    folder = _images(tmp_path / "p", range(3))
    prof = {"embedder": {"backend": "hf", "model": path}}
    assert index_images(ws, folder, name="clip", profile=prof, progress=False).added == 3
    assert len(search_images(ws, "a red circle", k=2, name="clip", profile=prof)) == 2


@pytest.mark.slow
def test_ray_embeds_a_collection(ws, profile, tmp_path):
    pytest.importorskip("ray")
    folder = _images(tmp_path / "p", range(6), corrupt=1)
    res = index_images(ws, folder, profile=profile, runner="ray", workers=1, progress=False)
    assert (res.added, len(res.corrupt)) == (6, 1)
    local = build_index(ws, folder, name="local", embedder=ShapesEmbedder(yaml.safe_load(
        Path(profile).read_text())["embedder"]["weights"]), progress=False)
    a, b = SearchIndex.open(ws), SearchIndex.open(ws, "local")
    assert local.added == 6
    order = {it["path"]: i for i, it in enumerate(b.items)}
    assert np.allclose(a.vectors, b.vectors[[order[it["path"]] for it in a.items]], atol=1e-5)
    # the actors detected the same objects as the local path
    same = b.objects.take(np.array([order[it["path"]] for it in a.items]))
    assert len(a.objects) == len(same) > 0
    for attr in ("counts", "box", "color", "shape", "size"):
        assert np.array_equal(getattr(a.objects, attr), getattr(same, attr)), attr


def _has_red_circle(path: str) -> bool:
    """The ground truth of the "exists red circle" task for an image written by ``_images``."""
    seed = int(Path(path).stem.removeprefix("scene"))
    return any(o.color == "red" and o.shape == "circle" for o in sample_scene(seed).objects)


def test_search_widget_and_app_card(ws, profile, tmp_path):
    pytest.importorskip("ipywidgets")
    from builder import Runtime
    from widgets import SearchWidget

    folder = _images(tmp_path / "p", range(3), corrupt=1)
    with Runtime(ws, profile=profile) as rt:
        widget = SearchWidget(ws, runtime=rt)
        assert widget.index(folder).added == 3 and "1 corrupt" in widget.status.value
        hits = widget.search("There is a red circle.", k=2)
        assert len(hits) == 2 and sum(t.children[0].value.count("<img") for t in widget.results.children) == 2
        assert [b.value for b in widget.answers] == ["", ""]  # every answer starts empty
        n = len(ws.load_task().examples)
        widget.answers[1].value = "3"
        card = widget.add_answered()
        assert [(ex.id, ex.expected) for ex in card.examples[n:]] == [(f"sr{n:04d}", 3)]
        assert ws.resolve_image(card.examples[-1].images[0]).read_bytes() == Path(hits[1].item).read_bytes()
        assert f"#{hits[0].rank} {Path(hits[0].item).name}" in widget.status.value  # named as not added
        assert widget.answers[1] is None and widget.answers[0].value == ""
        assert len(widget.add_results(1).examples) == len(ws.load_task().examples) == n + 2  # one answer, explicitly
        # a query that cannot be read: no results, and the status says which words
        assert widget.search("is the stock price up today", k=2) == []
        assert "No results" in widget.status.value and "price" in widget.status.value
        widget.search("There is a red circle.", k=2)
        assert "read as: <b>there are red circles</b>" in widget.status.value


def test_app_search_card_adds_hits_with_their_own_answers(tmp_path):
    """The app's Search card (bundled embedder): index, search, answer two of four hits
    differently, add; the others are named as not added, the task view lists the new examples,
    which can be edited and deleted, and the earlier task restored."""
    pytest.importorskip("panel")
    from builder.interfaces.app import VisForgeApp

    folder = _images(tmp_path / "p", range(4))
    app = VisForgeApp(tmp_path / "ws")
    try:
        app.task.create_task("exists", "red circle", n=3, seed=2)
        ws, search = app.workspace, app.search
        original = ws.load_task()
        assert search.index(str(folder)).added == 4
        assert search.search("email this to my manager", k=4) == []
        assert "No results" in search.status.object and "email" in search.status.object
        hits = search.search("There is a red circle.", k=4, verify=False)
        assert len(hits) == 4 and [b.value for b in search.answers] == [""] * 4
        assert app.state.guard(search.add) is None and "no result has an answer" in app.state.message.object
        search.answers[0].value = "maybe"
        assert app.state.guard(search.add) is None
        assert f"hit #{hits[0].rank} ({Path(hits[0].item).name})" in app.state.message.object
        assert ws.load_task() == original  # nothing saved
        truth = [_has_red_circle(h.item) for h in hits]
        search.answers[0].value = "yes" if truth[0] else "no"
        search.answers[2].value = "yes" if truth[2] else "no"
        search.add()
        card = ws.load_task()
        assert [(ex.id, ex.expected) for ex in card.examples[3:]] == [("sr0003", truth[0]), ("sr0004", truth[2])]
        for ex, hit in zip(card.examples[3:], [hits[0], hits[2]], strict=True):
            assert ws.resolve_image(ex.images[0]).read_bytes() == Path(hit.item).read_bytes()
        status = search.status.object
        assert "sr0003" in status and "sr0004" in status and "Not added (no answer)" in status
        for h in (hits[1], hits[3]):
            assert f"#{h.rank} {Path(h.item).name}" in status
        assert search.answers[0] is None and search.answers[1].value == ""
        assert "sr0003" in app.task.task_view.object and {"sr0003", "sr0004"} <= set(app.task.example_pick.options)
        app.task.edit_example("sr0003", "no" if truth[0] else "yes")
        assert [ex.expected for ex in ws.load_task().examples if ex.id == "sr0003"] == [not truth[0]]
        app.task.delete_example("sr0004")
        assert [ex.id for ex in ws.load_task().examples][3:] == ["sr0003"]
        app.task.restore(app.task.history.options[next(k for k in app.task.history.options if k.startswith("#1 "))])
        assert ws.load_task() == original
    finally:
        app.close()
