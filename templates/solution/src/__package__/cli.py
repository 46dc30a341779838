"""Command line: ``run`` images and print JSON, ``serve`` over HTTP, ``info`` about the export.

This file is copied verbatim by ``visforge export``; the console script carries the solution's
name. Exit codes: 0 all inputs answered, 1 some input failed (bad image or program error),
2 usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys

from .runtime import manifest


def _run(args: argparse.Namespace) -> int:
    from builder.core.images import ImageError
    from builder.core.video import VideoError
    from builder.core.video import load_media as load_image

    from .runtime import Solution

    info = manifest()
    # A single-image solution answers each image on its own; a multi-image one reads them all.
    groups = [args.images] if info.get("multi_image") else [[p] for p in args.images]
    failed = False
    with Solution(workers=args.workers) as solution:
        for paths in groups:
            out = {"image": paths if info.get("multi_image") else paths[0]}
            try:
                arrays = [load_image(p) for p in paths]
            except (ImageError, VideoError) as e:
                out.update(ok=False, value=None, error=str(e), error_kind="image")
            else:
                out.update(solution.predict(arrays, query=args.query, choices=args.choices))
            failed |= not out["ok"]
            # One JSON object per line: readable for one image, streamable for many.
            print(json.dumps(out), flush=True)
    return 1 if failed else 0


def _serve(args: argparse.Namespace) -> int:
    from .server import MB, Limits, serve

    limits = Limits(
        max_request_bytes=int(args.max_request_mb * MB),
        max_image_bytes=int(args.max_image_mb * MB),
        max_side=args.max_side,
        max_pixels=args.max_pixels,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        request_timeout_s=args.timeout,
        worker_memory_mb=args.worker_memory_mb,
    )
    serve(host=args.host, port=args.port, workers=args.workers, limits=limits, cache_dir=args.cache_dir,
          log_level=args.log_level)
    return 0


def _info(args: argparse.Namespace) -> int:
    print(json.dumps(manifest(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    info = manifest()
    parser = argparse.ArgumentParser(prog=info["name"], description=info["description"])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="answer for each image and print one JSON object per line")
    run.add_argument("images", nargs="+", metavar="IMAGE")
    run.add_argument("--query", default=None, help="the question (defaults to the task's own)")
    run.add_argument("--choices", nargs="+", action="extend", default=None, help="candidate texts")
    run.add_argument("--workers", type=int, default=1, help="sandbox worker processes")
    run.set_defaults(func=_run)

    srv = sub.add_parser("serve", help="serve the HTTP API (see /docs)")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--workers", type=int, default=2, help="engine worker processes (requests run at once)")
    srv.add_argument("--max-queue", type=int, default=16, help="requests that may wait for a worker (then 503)")
    srv.add_argument("--timeout", type=float, default=30.0, help="each request's deadline in seconds (then 504)")
    srv.add_argument("--max-request-mb", type=float, default=32.0)
    srv.add_argument("--max-image-mb", type=float, default=16.0)
    srv.add_argument("--max-side", type=int, default=4096, help="longest image side in pixels (then 413)")
    srv.add_argument("--max-pixels", type=int, default=12_000_000, help="pixels per image (then 413)")
    srv.add_argument("--max-batch", type=int, default=64)
    srv.add_argument("--worker-memory-mb", type=float, default=1024.0,
                     help="how far an engine worker may grow past its size at start (MB); then it is replaced")
    srv.add_argument("--cache-dir", default=None, help="keep a tool-result cache in this folder")
    srv.add_argument("--log-level", default="info")
    srv.set_defaults(func=_serve)

    sub.add_parser("info", help="print the export manifest").set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
