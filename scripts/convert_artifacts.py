"""Convert learned-artifact folders from their older layouts to the one format of builder.core.artifacts.

    python scripts/convert_artifacts.py FOLDER [FOLDER ...]

Each folder gets the ``config.json`` record (architecture, format version, constructor config,
info); weights keep their bytes (only a file rename where the name changes). Recognised layouts:

* ``parser.json`` + ``head.safetensors``: a semantic-parser head (the default planner, an adapted
  workspace planner in ``checkpoints/planner``) -> ``config.json`` + ``model.safetensors``;
* ``planner.json`` beside a transformers ``config.json``: a causal-LM planner -> the record in
  that ``config.json``'s ``visforge_artifact`` key;
* ``teacher.json``: a SelTDA detection teacher -> ``config.json``;
* ``qgen.json`` + ``qgen.safetensors`` (+ ``answerer/``): a SelTDA generative shapes teacher
  -> ``config.json`` + ``model.safetensors`` (the answerer folder stays);
* ``video_head.json`` (a file): the video planner's kind head -> a ``video_head/`` folder;
* ``config.json`` with ``"arch": "slots-v3"`` (+ ``model.safetensors``): a shapes VQA network
  (the default engine, a fine-tune checkpoint, a SelTDA teacher's ``answerer/``) -> the
  ``shapes-vqa-slots-v3`` record (its ``training`` entry becomes ``info``);
* ``config.json`` with ``"arch": "dual-objects-clauses-v1"``: the shapes dual encoder ->
  the ``shapes-dual-encoder`` record.

A SelTDA shapes teacher's ``answerer/`` folder is converted with its teacher.

The committed weights were converted with this script (it reproduces them); run it on the
``checkpoints/`` folders of workspaces made before the change. A folder already converted is
left alone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from builder.core.artifacts import CONFIG_FILE, WEIGHTS_FILE, write_record  # noqa: E402


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# Older shapes-network layouts: config.json's "arch" -> (architecture, constructor keys, note).
_SHAPES_NETS = {
    "slots-v3": ("shapes-vqa-slots-v3", ("vocab", "answers", "image_size", "ch", "n_blocks", "emb", "hidden",
                                         "n_slots"), "shapes VQA network"),
    "dual-objects-clauses-v1": ("shapes-dual-encoder", ("vocab", "emb", "hidden", "dim"), "shapes dual encoder"),
}
# Input layout constants of the dual encoder the old config repeated (checked, not kept).
_EMBED_INPUTS = {"max_objects": 10, "obj_features": 18}


def convert(folder: Path) -> str:
    """Convert one folder in place (and a shapes teacher's ``answerer/``); returns what was done."""
    done = _convert_one(folder)
    answerer = folder / "answerer"
    if answerer.is_dir():
        done += f"; answerer/: {_convert_one(answerer)}"
    return done


def _convert_one(folder: Path) -> str:
    if folder.is_file() and folder.name == "video_head.json":
        return _video_head(folder)
    if (folder / "parser.json").is_file():
        info = _read(folder / "parser.json")
        config = info.pop("config")
        (folder / "head.safetensors").rename(folder / WEIGHTS_FILE)
        write_record(folder, "semantic-parser", 1, config, info)
        (folder / "parser.json").unlink()
        return "semantic parser"
    if (folder / "planner.json").is_file():
        meta = _read(folder / "planner.json")
        config = {k: meta.pop(k) for k in ("prompt_style", "max_new_tokens", "tokenizer_class") if k in meta}
        write_record(folder, "transformers-planner", 1, config, meta, transformers=True)
        (folder / "planner.json").unlink()
        return "causal-LM planner"
    if (folder / "teacher.json").is_file():
        cfg = _read(folder / "teacher.json")
        write_record(folder, "seltda-detection-teacher", 1,
                     {"qtype_prior": cfg["qtype_prior"], "min_score": cfg["min_score"]})
        (folder / "teacher.json").unlink()
        return "detection teacher"
    if (folder / "qgen.json").is_file():
        (folder / "qgen.safetensors").rename(folder / WEIGHTS_FILE)
        write_record(folder, "seltda-shapes-teacher", 1, _read(folder / "qgen.json"))
        (folder / "qgen.json").unlink()
        return "generative shapes teacher"
    if (folder / CONFIG_FILE).is_file():
        old = _read(folder / CONFIG_FILE)
        if "architecture" in old or "visforge_artifact" in old:
            return "nothing to do"
        if old.get("arch") in _SHAPES_NETS:
            return _shapes_net(folder, old)
        raise SystemExit(f"{folder}: {CONFIG_FILE} records no architecture and no known older layout "
                         f"(arch {old.get('arch')!r})")
    raise SystemExit(f"{folder}: no known artifact layout")


def _video_head(path: Path) -> str:
    head = _read(path)
    folder = path.with_suffix("")
    folder.mkdir(exist_ok=True)
    config = {k: head.pop(k) for k in ("kinds", "C", "coef", "intercept")}
    write_record(folder, "video-kind-head", 1, config, head)
    path.unlink()
    return "video kind head"


def _shapes_net(folder: Path, old: dict) -> str:
    """The shapes VQA net or dual encoder: the record replaces the old config.json; the weights
    file (already ``model.safetensors``) is not touched."""
    architecture, keys, note = _SHAPES_NETS[old["arch"]]
    if not (folder / WEIGHTS_FILE).is_file():
        raise SystemExit(f"{folder}: no {WEIGHTS_FILE} beside the {note}'s {CONFIG_FILE}")
    for key, value in _EMBED_INPUTS.items():
        if key in old and old[key] != value:
            raise SystemExit(f"{folder}: {key}={old[key]} differs from the current encoder's {value}")
    unknown = set(old) - set(keys) - set(_EMBED_INPUTS) - {"arch", "training"}
    if unknown:
        raise SystemExit(f"{folder}: unexpected entries in {CONFIG_FILE}: {sorted(unknown)}")
    write_record(folder, architecture, 1, {k: old[k] for k in keys if k in old}, old.get("training"))
    return note


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    for arg in argv:
        print(f"{arg}: {convert(Path(arg))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
