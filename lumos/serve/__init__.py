"""`lumos serve`: a web UI over `LumosPipeline` (gradio, the optional extra `pip install 'lumos[ui]'`).

    lumos serve                                   # the built-in model on http://127.0.0.1:7860
    lumos serve --model runs/NAME --port 8000     # a pipeline folder (or a Hub repo id)

- `lumos.serve.app.Studio` is the server's state and rules, without gradio: the limits, the uploads
  (decoded by `lumos.media`), the queue (one generation at a time, a bounded number waiting), a
  generation as a stream of `Update`s (`pipe.stream`: the frames of each latent frame as it is
  decoded), the files of a result and its manifest, the gallery. Tests drive it directly.
- `lumos.serve.app.build_ui` lays out the page on a `Studio` and `launch` serves it; gradio is imported
  there only, so `import lumos` and `lumos --help` work without it.
"""

from lumos.serve.app import Limits, Request, Result, Studio, Update

__all__ = ["Limits", "Request", "Result", "Studio", "Update"]
