"""Time our sampler against the authors' released one on the same random-weight checkpoint.

    python benchmarks/compare_reference.py --reference /path/to/Lumos-checkout
    python benchmarks/compare_reference.py --reference /tmp/lumos-ref --shape 3x8x16 --steps 8 --threads 1
    python benchmarks/compare_reference.py --reference /tmp/lumos-ref --reference-python /tmp/refvenv/bin/python \\
        --shape 2x48x84 --steps 2 --repeats 1

Not part of CI, and it fetches nothing: --reference is a checkout of alibaba-damo-academy/Lumos made by
hand (its `lumos-1/lumos-1/inference_solver_vid.py` holds the released sampler,
`FlexARVidInferenceSolver.generate_maskedAR_mmrope_v8_newcache`). The reference side needs
`transformers` (4.43-4.46: the vendored model uses internals later releases changed) and `omegaconf`;
give --reference-python an interpreter that has them when the project's does not (the script says so
and exits 2). Our side runs in the interpreter that runs this script (it needs `lumos`).

What it does:
1. builds a random checkpoint in the released format with THE AUTHORS' classes (their
   `ChameleonConfig` + `ChameleonMMRoPEForConditionalGeneration`, `save_pretrained`): hidden 256,
   2 layers, 2 heads of 128, the full 129,536-id vocabulary, MM-RoPE, their default (unused) VQ-GAN
   config, in a temporary folder; our `LumosModel.from_pretrained` loads the same file;
2. per shape (F latent frames x h x w codes, S steps), text-to-video with CFG 15, history mask 0.7,
   fp32, a random 16-token prompt: alternately a reference process and one of ours, --repeats times
   each. A process loads the checkpoint and builds what the sampler needs once (excluded from the
   time), runs one GREEDY video untimed (it warms the process up and gives the like-for-like check),
   then times one SAMPLED video (--no-greedy: no greedy video, no warm-up) with the released settings (ours: `reference_compat=True`,
   remask temperature 1; theirs: temperature 1, multinomial sampling). Its peak RSS is
   `ru_maxrss` of that process alone (os.wait4), so each side's number is its own;
3. greedy check: ours with temperature 0 and remask temperature 0 (argmax codes, confidences without
   Gumbel noise), theirs with remask temperature 0 and `torch.multinomial` replaced by an argmax for that
   run only (their sampler has no greedy switch; the replacement is the only change to their code
   path). The codes of both are compared.

What the reference's time leaves out, as one-off set-up: loading their item processor (the Cosmos
tokenizer and the text tokenizer; replaced by a stub returning the same prompt ids), building their
`VideoLogitsProcessor` (a ~37 s pure-Python list scan per sample in the released scripts; replaced by
the same suppression mask built with `torch.arange`) and decoding the video (replaced by returning the
token ids). What ours includes: laying out the plan (`plan_generation`) and the generation.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

VOCAB = 129_536
VISUAL = 65_536
SHAPES = {"3x8x16": 8, "2x48x84": 2}           # shape -> its default steps
GUIDANCE, HISTORY = 15.0, 0.7
PIP = "{py} -m pip install 'transformers==4.44.2' omegaconf"


class Refused(SystemExit):
    """Bad input or a missing dependency: one line on stderr, exit code 2."""

    def __init__(self, message: str):
        print(f"compare_reference: {message}", file=sys.stderr)
        super().__init__(2)


# ------------------------------------------------------------------------------------------- children

def _reference_paths(root: str) -> Path:
    """The folder holding inference_solver_vid.py inside a checkout (or that folder itself)."""
    root = Path(root)
    for d in (root / "lumos-1" / "lumos-1", root / "lumos-1", root):
        if (d / "inference_solver_vid.py").is_file():
            return d
    raise Refused(f"{root} is not a checkout of alibaba-damo-academy/Lumos "
                     f"(no lumos-1/lumos-1/inference_solver_vid.py)")


def _import_reference(root: str):
    """Their modules, with stubs for the imports the sampler path never uses (video I/O, image
    transforms, the item processor with its Cosmos tokenizer)."""
    inner = _reference_paths(root)
    sys.path[:0] = [str(inner), str(inner.parent)]
    import importlib.machinery
    import transformers  # noqa: F401  (before the stubs: it probes which optional packages exist)
    for name in ("cv2", "torchvision"):
        try:
            __import__(name)
        except ImportError:
            mod = types.ModuleType(name)
            mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
            if name == "torchvision":
                mod.transforms = types.ModuleType("torchvision.transforms")
                mod.transforms.__spec__ = importlib.machinery.ModuleSpec("torchvision.transforms", None)
                sys.modules["torchvision.transforms"] = mod.transforms
            sys.modules[name] = mod
    stub = types.ModuleType("data.item_processor")
    stub.__spec__ = importlib.machinery.ModuleSpec("data.item_processor", None)
    stub.FlexARItemProcessor2 = stub.FlexARItemProcessor = object
    sys.modules["data.item_processor"] = stub
    import inference_solver_vid
    from model.chameleon import ChameleonConfig, ChameleonMMRoPEForConditionalGeneration
    return inference_solver_vid, ChameleonConfig, ChameleonMMRoPEForConditionalGeneration


def build_checkpoint(job: dict) -> dict:
    import torch
    _, ChameleonConfig, Model = _import_reference(job["reference"])
    torch.manual_seed(job["seed"])
    vocab_map = {"<image>": 8711, **{f"IMGIMG{i}Z": 4 + i for i in range(8192)}}   # Chameleon's image ids
    cfg = ChameleonConfig(vocab_size=VOCAB, hidden_size=job["hidden"], intermediate_size=4 * job["hidden"],
                          num_hidden_layers=job["layers"], num_attention_heads=job["hidden"] // 128,
                          num_key_value_heads=job["hidden"] // 128, max_position_embeddings=16384,
                          rms_norm_eps=1e-5, mm_rope=True, model_parallel_size=1, swin_norm=False,
                          vocabulary_map=vocab_map, mask_image_logits=True, bos_token_id=0, eos_token_id=8710,
                          pad_token_id=0, torch_dtype="float32")
    model = Model(cfg).eval()
    model.save_pretrained(job["out"], safe_serialization=True)
    return {"params": sum(p.numel() for p in model.parameters())}


class _ItemProcessor:
    """What the released sampler asks of its item processor, without the tokenizers: token ids by name,
    and `process_item` returning the prompt ids (BOS text SEP, then the empty answer's SEP it drops)."""
    patch_size = 32                                     # pixels per size-token unit
    image_start_token, image_end_token = "<racm3:break>", "<eoss>"
    video_start_token, video_end_token = "<reserved09000>", "<reserved09001>"
    sep_token, new_line_token, mask_token = "<reserved08706>", "<reserved08799>", "<reserved08999>"

    def __init__(self, prompt_ids):
        self.prompt_ids = list(prompt_ids)

    def token2id(self, token: str) -> int:
        if token == "<racm3:break>":
            return 8197
        if token == "<eoss>":
            return 8196
        return int(re.fullmatch(r"<reserved(\d{5})>", token)[1]) + 4

    def get_n_grids_token(self, n: int) -> str:
        return f"<reserved{8800 + n:05d}>"

    def process_item(self, item):
        return self.prompt_ids + [8710]


def prompt_ids(job: dict) -> list[int]:
    """BOS, random text ids (clear of every special id), SEP: the conditional turn of both sides."""
    import numpy as np
    text = np.random.default_rng(job["seed"]).integers(10_000, 60_000, job["text_len"])
    return [0, *map(int, text), 8710]


def _fps(frames: int) -> int:
    return 4 * (frames - 1) + 1              # duration 1 s: fps pixel frames -> `frames` latent frames


def run_reference(job: dict) -> dict:
    import torch
    torch.set_num_threads(job["threads"])
    solver_mod, _, Model = _import_reference(job["reference"])
    F, h, w, S = job["frames"], job["h"], job["w"], job["steps"]
    solver = object.__new__(solver_mod.FlexARVidInferenceSolver)           # no tokenizers, no CUDA
    solver.dtype = torch.float32
    solver.model = Model.from_pretrained(job["ckpt"], torch_dtype=torch.float32).eval()
    solver.item_processor = _ItemProcessor(prompt_ids(job))
    solver.vae_st_compress = [8, 1]
    solver.visual_tokenizer = "Cosmos-Tokenizer-DV4x8x8"
    solver.temporal_compression, solver.spatial_compression = 4, 8
    solver.decode_video_ids = lambda tokens, path: tokens
    ids = torch.arange(VOCAB)
    processors = [None, types.SimpleNamespace(suppress_cosmos_video_token_mask=(ids < VISUAL) | (ids >= VOCAB))]

    def one(temperature, seed):
        import contextlib, io
        with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():       # it prints every frame
            tokens = solver.generate_maskedAR_mmrope_v8_newcache(
                [["(prompt ids given by the stub)", ""]], max_gen_len=None, temperature=temperature,
                output_video_path=None, fps_duration=[_fps(F), 1], generation_task="t2v", timesteps=S,
                guidance_scale=GUIDANCE, generator=torch.Generator().manual_seed(seed),
                video_resolution=[8 * w, 8 * h], mask_history_ratio=HISTORY, logits_processor=processors)
        return [t - VISUAL for t in tokens if VISUAL <= t < VOCAB]

    greedy = None
    if job.get("greedy", True):
        multinomial = torch.multinomial
        torch.multinomial = lambda probs, n, *a, **k: probs.argmax(-1, keepdim=True)     # greedy run only
        try:
            greedy = one(0.0, job["seed"])
        finally:
            torch.multinomial = multinomial
    t0 = time.perf_counter()
    sampled = one(1.0, job["seed"])
    seconds = time.perf_counter() - t0
    assert len(sampled) == F * h * w and (greedy is None or len(greedy) == F * h * w), (len(sampled), F * h * w)
    return {"seconds": seconds, "greedy": greedy, "threads": torch.get_num_threads()}


def run_ours(job: dict) -> dict:
    import torch
    torch.set_num_threads(job["threads"])
    from lumos.model import LumosModel
    from lumos.sampling import SampleConfig, generate, plan_generation
    F, h, w, S = job["frames"], job["h"], job["w"], job["steps"]
    model = LumosModel.from_pretrained(job["ckpt"], dtype=torch.float32).eval()
    vocab = model.config.vocab
    ids = prompt_ids(job)
    prompt = vocab.build(ids[1:-1], None, duration=1, fps=_fps(F), complete=False)
    reference_prompt = ids + [9004, 8804 + 1, 8804 + _fps(F)]
    if [int(t) for t in prompt] != reference_prompt:
        raise SystemExit(f"our prompt {list(prompt)} differs from the reference's {reference_prompt}")

    def one(cfg, seed):
        with torch.no_grad():
            plan = plan_generation(model, [prompt], F, h, w, cfg)
            out = generate(model, plan, cfg, torch.Generator().manual_seed(seed), mode="parallel")
        return out.codes[0].reshape(-1).tolist()

    greedy = None
    if job.get("greedy", True):
        greedy = one(SampleConfig(num_inference_steps=S, guidance_scale=GUIDANCE, history_mask_ratio=HISTORY,
                                  temperature=0.0, remask_temperature=0.0), job["seed"])
    t0 = time.perf_counter()
    one(SampleConfig(num_inference_steps=S, guidance_scale=GUIDANCE, history_mask_ratio=HISTORY,
                     remask_temperature=1.0, reference_compat=True), job["seed"])
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "greedy": greedy, "threads": torch.get_num_threads()}


CHILDREN = {"build": build_checkpoint, "reference": run_reference, "ours": run_ours}


def child_main(kind: str, job_json: str, out: str) -> None:
    result = CHILDREN[kind](json.loads(job_json))
    Path(out).write_text(json.dumps(result))


def spawn(python: str, kind: str, job: dict, tmp: Path) -> dict:
    """Run one child; its result with its own peak RSS (ru_maxrss of exactly that process)."""
    out = tmp / f"{kind}-{time.monotonic_ns()}.json"
    cmd = [python, os.path.abspath(__file__), "--child", kind, json.dumps(job), str(out)]
    env = dict(os.environ, PYTHONWARNINGS="ignore", TOKENIZERS_PARALLELISM="false")
    env.setdefault("OMP_NUM_THREADS", str(job.get("threads", 1)))
    log = tmp / f"{kind}.log"
    with open(log, "w") as fh:
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(p.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = log.read_text().strip().splitlines()[-15:]
        print(f"compare_reference: the {kind} process failed (exit {code}):\n" + "\n".join(tail), file=sys.stderr)
        raise SystemExit(1)
    result = json.loads(out.read_text())
    result["peak_rss"] = usage.ru_maxrss * 1024
    return result


# ----------------------------------------------------------------------------------------------- main

def parse_shape(text: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"(\d+)x(\d+)x(\d+)", text)
    if not m or min(map(int, m.groups())) < 1:
        raise Refused(f"--shape {text!r}: expected FxHxW (latent frames x rows x columns)")
    f, h, w = map(int, m.groups())
    if h % 4 or w % 4:
        raise Refused(f"--shape {text}: rows and columns must be multiples of 4 "
                         f"(one size token = 32 px = 4 codes)")
    return f, h, w


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", required=True, help="a checkout of alibaba-damo-academy/Lumos")
    p.add_argument("--reference-python", default=sys.executable,
                   help="the interpreter for the reference side (needs torch, transformers, omegaconf)")
    p.add_argument("--shape", nargs="+", help=f"FxHxW latent frames x rows x columns (default: {' '.join(SHAPES)})")
    p.add_argument("--steps", type=int, help="steps per frame (default per shape: " +
                   ", ".join(f"{k}: {v}" for k, v in SHAPES.items()) + "; 8 otherwise)")
    p.add_argument("--repeats", type=int, default=3, help="timed videos per side and shape (one per process)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads on both sides")
    p.add_argument("--hidden", type=int, default=256, help="hidden size of the random checkpoint (heads of 128)")
    p.add_argument("--layers", type=int, default=2, help="layers of the random checkpoint")
    p.add_argument("--text-len", type=int, default=16, help="random prompt text tokens")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-greedy", dest="greedy", action="store_false",
                   help="skip the untimed greedy video (the warm-up and the agreement check) in every process: "
                        "for shapes where one video takes minutes")
    p.add_argument("--keep", help="write the checkpoint here and keep it (default: a temporary folder)")
    args = p.parse_args(argv)

    for name in ("repeats", "threads", "layers", "text_len"):
        if getattr(args, name) < 1:
            raise Refused(f"--{name.replace('_', '-')} must be >= 1")
    if args.steps is not None and args.steps < 1:
        raise Refused("--steps must be >= 1")
    if args.hidden < 128 or args.hidden % 128:
        raise Refused("--hidden must be a multiple of 128 (heads of 128)")
    shapes = [(s, parse_shape(s)) for s in (args.shape or list(SHAPES))]
    _reference_paths(args.reference)
    probe = subprocess.run([args.reference_python, "-c", "import torch, transformers, omegaconf"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        print(f"compare_reference: the reference needs transformers and omegaconf in {args.reference_python}; "
              f"install them with: {PIP.format(py=shlex.quote(args.reference_python))} "
              f"(or pass --reference-python)", file=sys.stderr)
        return 2
    try:
        import lumos  # noqa: F401
    except ImportError:
        print(f"compare_reference: our side needs the lumos package in {sys.executable}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="lumos-compare-") as tmp:
        tmp = Path(tmp)
        ckpt = Path(args.keep) if args.keep else tmp / "ckpt"
        built = spawn(args.reference_python, "build", dict(reference=args.reference, seed=args.seed,
                                                           hidden=args.hidden, layers=args.layers,
                                                           out=str(ckpt)), tmp)
        print(f"random checkpoint (the authors' classes, save_pretrained): hidden {args.hidden}, "
              f"{args.layers} layers, vocabulary {VOCAB:,}, {built['params'] / 1e6:.1f}M parameters "
              f"(VQ-GAN included, which neither sampler uses); {args.threads} thread(s), fp32, CFG {GUIDANCE:g}, "
              f"history mask {HISTORY}")
        print(f"reference python: {args.reference_python}; ours: {sys.executable}")
        for text, (F, h, w) in shapes:
            steps = args.steps or SHAPES.get(text, 8)
            job = dict(reference=args.reference, ckpt=str(ckpt), frames=F, h=h, w=w, steps=steps,
                       threads=args.threads, seed=args.seed, text_len=args.text_len, greedy=args.greedy)
            runs = {"reference": [], "ours": []}
            for r in range(args.repeats):
                for side, python in (("reference", args.reference_python), ("ours", sys.executable)):
                    res = spawn(python, side, job, tmp)
                    runs[side].append(res)
                    print(f"  {text} S={steps} run {r + 1}/{args.repeats} {side:<9}: {res['seconds']:8.2f} s, "
                          f"peak RSS {mib(res['peak_rss'])}", flush=True)
            ref_s = statistics.median(x["seconds"] for x in runs["reference"])
            our_s = statistics.median(x["seconds"] for x in runs["ours"])
            ref_m = max(x["peak_rss"] for x in runs["reference"])
            our_m = max(x["peak_rss"] for x in runs["ours"])
            print(f"{text} ({F} latent frames of {h}x{w} codes), {steps} steps, median of {args.repeats}:")
            print(f"  reference {ref_s:8.2f} s/video   peak RSS {mib(ref_m)}")
            print(f"  ours      {our_s:8.2f} s/video   peak RSS {mib(our_m)}")
            print(f"  reference / ours: {ref_s / our_s:.2f}x wall time, {ref_m / our_m:.2f}x peak RSS")
            if not args.greedy:
                print("  greedy codes: not checked (--no-greedy; the timed video ran in a process without a "
                      "warm-up)", flush=True)
                continue
            g_ref, g_our = runs["reference"][0]["greedy"], runs["ours"][0]["greedy"]
            stable = all(x["greedy"] == g_ref for x in runs["reference"]) and \
                all(x["greedy"] == g_our for x in runs["ours"])
            same = sum(a == b for a, b in zip(g_ref, g_our))
            first = next((i for i, (a, b) in enumerate(zip(g_ref, g_our)) if a != b), None)
            where = "" if first is None else f"; first difference in latent frame {first // (h * w)} (code {first})"
            print(f"  greedy codes agree: {'yes' if same == len(g_ref) else 'NO'} ({same}/{len(g_ref)} equal"
                  f"{where}){'' if stable else '; NOTE: greedy codes differed between processes of one side'}",
                  flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child_main(*sys.argv[2:])
        sys.exit(0)
    sys.exit(main())
