"""Make docs/video_trace.png: the collision-summary program's trace strip on a real clip, and a
video example's thumbnail as the task views show it.

Usage: python docs/make_video_trace.py   (shapes engines and the sandbox; nothing is faked)
"""

import tempfile

from PIL import Image, ImageDraw

from builder.core.video import load_media
from builder.executor import Sandbox
from builder.interfaces.views import video_thumbnail
from builder.run.local import examples_from_card, run_program
from builder.tools.profile import build_engines
from builder.tools.trace import TRACK_OUTLINES, strip_image, video_strip
from builder.domains.shapes.world.video_tasks import make_video_task_card, reference_program


def main(out: str = "docs/video_trace.png") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        card_path = make_video_task_card(tmp, "collision_summary", n=1, seed=5)
        from builder.core.taskcard import load_task_card

        ex = examples_from_card(load_task_card(card_path), card_path.parent)[0]
        with Sandbox(workers=1) as sandbox:
            res, trace = run_program(reference_program("collision_summary"), ex, build_engines("shapes"), sandbox,
                                     inspect=True)
        summary = res.value
        tracks = [t for t in trace.steps[0].result if t["label"] in summary["objects"]]
        strip = strip_image(video_strip(load_media(ex.images[0]), tracks, mark=summary["frame"], side=160))
        thumb = video_thumbnail(ex.images[0], 96)
    lines = [f"collision of {' and '.join(summary['objects'])} at frame {summary['frame']} (red frame)",
             "before: " + ", ".join(f"{k} {v}" for k, v in summary["before"].items())
             + "   after: " + ", ".join(f"{k} {v}" for k, v in summary["after"].items())]
    canvas = Image.new("RGB", (strip.width + thumb.width + 24, strip.height + 44), "white")
    canvas.paste(strip, (0, 40))
    canvas.paste(thumb, (strip.width + 16, 40))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((4, 4 + 16 * i), line, fill="#222")
    for k, t in enumerate(tracks):
        x = strip.width - 240 + 120 * k
        draw.rectangle([x, 6, x + 9, 15], outline=TRACK_OUTLINES[k], width=2)
        draw.text((x + 14, 4), t["label"], fill="#222")
    draw.text((strip.width + 16, 40 + thumb.height + 2), "thumbnail", fill="#555")
    canvas.save(out)
    print(out, canvas.size)


if __name__ == "__main__":
    main()
