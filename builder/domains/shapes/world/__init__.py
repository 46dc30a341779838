"""The shapes world: a procedural CLEVR-like domain with exact ground truth (the embedded default).

``sample_scene``/``render_scene`` make single scenes; ``generate_dataset``/``load_dataset`` write
and read VQA, grounding and image-text matching examples with reference programs.
"""

from builder.domains.shapes.vocab import ObjectSpec, parse_phrase
from builder.domains.shapes.world.dataset import (
    build_world,
    generate_dataset,
    load_dataset,
    load_scenes,
    read_jsonl,
)
from builder.domains.shapes.world.language import Caption
from builder.domains.shapes.world.scene import (
    COLORS,
    PRESETS,
    SHAPES,
    SIZES,
    Domain,
    Scene,
    SceneObject,
    get_domain,
    render_array,
    render_scene,
    sample_scene,
    with_domain,
)
from builder.domains.shapes.world.tasks import ANSWER_VOCAB, FAMILIES, SUBQUESTION, TEMPLATES, Template

__all__ = [
    "ANSWER_VOCAB", "COLORS", "FAMILIES", "PRESETS", "SHAPES", "SIZES", "SUBQUESTION", "TEMPLATES",
    "Caption", "Domain", "ObjectSpec", "Scene", "SceneObject", "Template",
    "build_world", "generate_dataset", "get_domain", "load_dataset", "load_scenes", "parse_phrase",
    "read_jsonl", "render_array", "render_scene", "sample_scene", "with_domain",
]
