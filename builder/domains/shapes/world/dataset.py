"""Generate shapes-world datasets on disk and load them as Hugging Face datasets.

Layout of a generated folder::

    config.json      the generation arguments (domain knobs spelled out)
    images/*.png     one PNG per scene, no metadata, byte-identical for a seed
    scenes.jsonl     per scene: id, image, width, height, domain, background, objects (ground truth)
    examples.jsonl   per example: id, family, qtype, output, images, scene_ids, query, choices,
                     expected, template_id, split, program

``expected`` is a string answer (output "text"), a list of [x0, y0, x1, y1] boxes (output
"boxes") or the index of the right choice (output "choice"). Image paths are relative to the folder.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from builder.domains.shapes.world.scene import Domain, Scene, get_domain, render_scene, sample_scene
from builder.domains.shapes.world.tasks import FAMILIES, QTYPES, make_example, make_image_choice

WORLD_VERSION = "1"
_ITM_KINDS = ("exists", "relation", "count")


def _scene_id(i: int) -> str:
    return f"s{i:05d}"


def _itm_example(scenes: list[Scene], i: int, rng: np.random.Generator, heldout_fraction: float) -> dict | None:
    """Image choice for about half the scenes (falling back to caption choice), any caption kind."""
    kinds = [_ITM_KINDS[j] for j in rng.permutation(len(_ITM_KINDS))]
    modes = ("image", "text") if rng.random() < 0.5 and len(scenes) > 3 else ("text",)
    for mode in modes:
        for kind in kinds:
            if mode == "image":
                made = make_image_choice(scenes, i, rng, kind, heldout_fraction=heldout_fraction)
                if made:
                    return {**made[0], "scene_ids": made[1]}
            else:
                ex = make_example(scenes[i], rng, "itm", f"text_{kind}", heldout_fraction)
                if ex:
                    return {**ex, "scene_ids": [i]}
    return None


def build_world(n: int, seed: int, domain: str | Domain = "clean", families=FAMILIES, image_size: int | None = None,
                text_labels: bool = False, vqa_per_scene: int = 2, heldout_fraction: float = 0.25,
                n_objects: tuple[int, int] = (3, 6)) -> tuple[list[Scene], list[dict]]:
    """Sample ``n`` scenes and their examples in memory (no pixels, no files).

    Per scene: ``vqa_per_scene`` VQA questions of distinct types, one grounding expression and
    one image-text matching example (caption choice or image choice, about half each).
    Examples carry ``scene_ids`` (indices into the returned scenes) instead of image paths.
    """
    unknown = set(families) - set(FAMILIES)
    if unknown or not families:
        raise ValueError(f"families must be a non-empty subset of {FAMILIES}, got {families!r}")
    if n < 1:
        raise ValueError("n must be at least 1")
    dom = get_domain(domain)
    scenes = [sample_scene(np.random.default_rng([seed, i, 0]), dom, image_size, n_objects, text_labels)
              for i in range(n)]
    examples: list[dict] = []
    for i, scene in enumerate(scenes):
        rng = np.random.default_rng([seed, i, 1])
        per_scene = []
        quota = {"vqa": vqa_per_scene, "grounding": 1, "itm": 1}
        for family in (f for f in FAMILIES if f in families):
            if family == "itm":
                ex = _itm_example(scenes, i, rng, heldout_fraction)
                per_scene += [ex] if ex else []
                continue
            done = 0
            qtypes = [QTYPES[family][j] for j in rng.permutation(len(QTYPES[family]))]
            for qtype in qtypes:
                if done == quota[family]:
                    break
                ex = make_example(scene, rng, family, qtype, heldout_fraction)
                if ex:
                    per_scene.append({**ex, "scene_ids": [i]})
                    done += 1
        for k, ex in enumerate(per_scene):
            examples.append({"id": f"{_scene_id(i)}-{k}", **ex})
    return scenes, examples


def generate_dataset(out_dir, n: int, seed: int, domain: str | Domain = "clean", families=FAMILIES,
                     image_size: int | None = None, text_labels: bool = False, vqa_per_scene: int = 2,
                     heldout_fraction: float = 0.25, n_objects: tuple[int, int] = (3, 6)) -> Path:
    """Write ``n`` scenes with their examples to ``out_dir`` (see the module docstring for the
    layout) and return the folder. Same arguments => byte-identical files."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    dom = get_domain(domain)
    scenes, examples = build_world(n, seed, dom, families, image_size, text_labels, vqa_per_scene,
                                   heldout_fraction, n_objects)
    image_path = [f"images/{_scene_id(i)}.png" for i in range(n)]
    for path, scene in zip(image_path, scenes, strict=True):
        render_scene(scene).save(out / path, format="PNG")  # PIL writes no time or text chunks
    config = {"world_version": WORLD_VERSION, "n": n, "seed": seed, "domain": dataclasses.asdict(dom),
              "families": list(families), "image_size": scenes[0].width, "text_labels": text_labels,
              "vqa_per_scene": vqa_per_scene, "heldout_fraction": heldout_fraction, "n_objects": list(n_objects)}
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    with open(out / "scenes.jsonl", "w") as f:
        for i, scene in enumerate(scenes):
            f.write(json.dumps({"id": _scene_id(i), "image": image_path[i], **scene.to_json()}) + "\n")
    with open(out / "examples.jsonl", "w") as f:
        for ex in examples:
            row = {k: ex[k] for k in ("id", "family", "qtype", "output")}
            row["images"] = [image_path[j] for j in ex["scene_ids"]]
            row.update({k: ex[k] for k in ("scene_ids", "query", "choices", "expected", "template_id", "split",
                                           "program")})
            f.write(json.dumps(row) + "\n")
    return out


def read_jsonl(path) -> list[dict]:
    """Read a JSON-lines file into a list of dicts."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def load_scenes(data_dir) -> list[dict]:
    """The scene ground truth of a generated folder (rows of scenes.jsonl)."""
    return read_jsonl(Path(data_dir) / "scenes.jsonl")


def load_dataset(data_dir, decode_images: bool = False):
    """Load examples.jsonl as a ``datasets.Dataset``.

    ``images`` holds absolute image paths (strings), or PIL images when ``decode_images`` (a list
    of ``datasets.Image`` features). Because ``expected`` differs in type per output kind, it is
    stored as JSON text in ``expected_json`` and also split into typed nullable columns:
    ``answer`` (str, output "text"), ``boxes`` (list of [x0, y0, x1, y1], output "boxes") and
    ``choice`` (int, output "choice").
    """
    import datasets

    root = Path(data_dir).resolve()
    rows = []
    for ex in read_jsonl(root / "examples.jsonl"):
        exp, kind = ex["expected"], ex["output"]
        rows.append({
            "id": ex["id"], "family": ex["family"], "qtype": ex["qtype"], "output": kind,
            "images": [str(root / p) for p in ex["images"]], "scene_ids": ex["scene_ids"], "query": ex["query"],
            "choices": ex["choices"], "expected_json": json.dumps(exp),
            "answer": exp if kind == "text" else None, "boxes": exp if kind == "boxes" else None,
            "choice": exp if kind == "choice" else None,
            "template_id": ex["template_id"], "split": ex["split"], "program": ex["program"],
        })
    seq = getattr(datasets, "List", None) or datasets.Sequence
    text = datasets.Value("string")
    features = datasets.Features({
        "id": text, "family": text, "qtype": text, "output": text,
        "images": seq(datasets.Image() if decode_images else text), "scene_ids": seq(datasets.Value("int32")),
        "query": text, "choices": seq(text), "expected_json": text, "answer": text,
        "boxes": seq(seq(datasets.Value("int32"))), "choice": datasets.Value("int32"),
        "template_id": text, "split": text, "program": text,
    })
    return datasets.Dataset.from_list(rows, features=features)
