"""Make docs/overview.png: a real program run on a shapes-world scene, its tool calls drawn.

Usage: python docs/make_overview.py   (uses the shapes engines and the sandbox; nothing is faked)
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from builder.run import ExampleInput, run_program
from builder.executor import Sandbox
from builder.tools.profile import build_engines
from builder.tools.trace import draw_boxes
from builder.domains.shapes.world import render_scene, sample_scene

PROGRAM = '''def execute(image):
    n = 0
    for obj in image.find("object"):
        if obj.verify("Is this object red?"):
            n += 1
    return n
'''


def main(out: str = "docs/overview.png") -> None:
    # A scene with two red objects among others (chosen by its ground truth; the program never sees it).
    seed = next(s for s in range(1000) if sum(o.color == "red" for o in
                sample_scene(np.random.default_rng([s, 7]), "clean", n_objects=(5, 6)).objects) == 2)
    scene = sample_scene(np.random.default_rng([seed, 7]), "clean", n_objects=(5, 6))
    path = Path("/tmp/vf-overview.png")
    render_scene(scene).save(path)
    image = np.asarray(Image.open(path).convert("RGB"))
    with Sandbox() as sb:
        res, trace = run_program(PROGRAM, ExampleInput([str(path)]), build_engines({"detector": {"backend": "shapes"},
                                 "vqa": {"backend": "shapes"}}), sb, inspect=True)
    found = trace.steps[0].result
    verdicts = [s.result for s in trace.steps[1:]]
    red = [d["box"] for d, v in zip(found, verdicts, strict=True) if v]
    other = [d["box"] for d, v in zip(found, verdicts, strict=True) if not v]
    pic = draw_boxes(image, other, outline="#888888", max_side=384)
    pic = Image.fromarray(np.asarray(draw_boxes(np.asarray(pic), [[c * 3 for c in b] for b in red],
                                                outline="#00c853", max_side=384)))
    font = ImageFont.load_default(size=17)
    canvas = Image.new("RGB", (384 + 470, 384 + 60), "white")
    canvas.paste(pic, (450, 10))
    d = ImageDraw.Draw(canvas)
    d.multiline_text((16, 14), PROGRAM, fill="#222222", font=font, spacing=6)
    y = 200
    d.text((16, y), f"{len(trace.steps)} tool calls, in the sandbox:", fill="#555555", font=font)
    for s in trace.steps[:7]:
        y += 24
        arg = s.args[0] if s.args else ""
        d.text((16, y), f"{s.step}. {s.tool}({arg!r}) -> {s.result if s.tool != 'find' else len(s.result)}",
               fill="#555555", font=ImageFont.load_default(size=14))
    d.text((16, 384 + 20), f"result: {res.value}   (green: verified red)", fill="#00a040", font=font)
    canvas.save(out)
    print(f"wrote {out}: value {res.value}")


if __name__ == "__main__":
    main()
