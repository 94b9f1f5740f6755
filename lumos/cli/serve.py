"""`lumos serve`: the web UI (gradio), a thin command line over `lumos.serve`.

    lumos serve                                        # the built-in model on http://127.0.0.1:7860
    lumos serve --model runs/NAME --port 8000          # a pipeline folder, built-in name or Hub repo id
    lumos serve --host 0.0.0.0 --max-frames 65         # reachable from other machines: say so explicitly

Needs the optional extra: `pip install 'lumos[ui]'`. The flags and gradio are checked before the model
loads. One generation runs at a time; --max-queue more wait, beyond that the page says "busy".
"""

from __future__ import annotations

import argparse
import importlib.util

from lumos.cli.flags import add_threads, apply_threads
from lumos.utils import LumosError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from lumos.serve.app import Limits

    d = Limits()
    p.add_argument("--model", default="moving-digits",
                   help="pipeline folder, built-in model name or Hub repo id")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (localhost only unless you say otherwise)")
    p.add_argument("--port", type=int, default=7860, help="port")
    p.add_argument("--device", help="cuda, cpu, ... (default: cuda if available)")
    lim = p.add_argument_group("limits of one request")
    lim.add_argument("--max-frames", type=int, default=d.max_frames, help="frames of one video")
    lim.add_argument("--max-steps", type=int, default=d.max_steps, help="refinement steps per latent frame")
    lim.add_argument("--max-resolution", type=int, default=d.max_resolution, help="pixels per side")
    lim.add_argument("--max-upload-mb", type=float, default=d.max_upload_mb, help="megabytes per uploaded file")
    lim.add_argument("--max-queue", type=int, default=d.max_queue,
                     help="generations waiting behind the running one (beyond: 'busy')")
    add_threads(p)


def run(args) -> int:
    from lumos.serve.app import Limits

    apply_threads(args)
    limits = Limits(max_frames=args.max_frames, max_steps=args.max_steps, max_resolution=args.max_resolution,
                    max_upload_mb=args.max_upload_mb, max_queue=args.max_queue)
    if not 0 <= args.port <= 65535:
        raise LumosError(f"--port must be 0..65535, got {args.port}")
    if importlib.util.find_spec("gradio") is None:
        raise LumosError("lumos serve needs gradio: pip install 'lumos[ui]'")

    from lumos.pipeline import LumosPipeline, resolve_device
    from lumos.serve.app import Studio, launch

    device, dtype = resolve_device(args.device)
    pipe = LumosPipeline.from_pretrained(args.model, device=device, dtype=dtype)
    launch(Studio(pipe, args.model, limits), host=args.host, port=args.port)
    return 0
