"""The bad-input corpus of generation: `lumos generate`, `lumos bench`, `lumos eval`, `lumos demo` and the
Python API (`LumosPipeline`, `LumosModel.from_pretrained`, `SampleConfig`). Every case goes through
`tests/badinput.py` (`refuse` / `refuse_api`): exit code 2, one clear line, no traceback, no file created,
changed or deleted. Where an input looks odd but is valid (guidance_scale 0, top_k = the codebook, the
largest seed), a test shows that it works."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from badinput import pickle_bomb, refuse, refuse_api
from lumos.cli import main
from lumos.config import ModelConfig
from lumos.model import LumosModel
from lumos.pipeline import ASSETS, LumosPipeline
from lumos.sampling import SampleConfig
from test_media import bilevel_png as png       # a 12000x12000 PNG: ~20 KB on disk, 432 MB decoded
from test_pipeline_cli import tiny_pipe

DIGITS = ASSETS / "moving-digits"          # the built-in model: real tokenizers, max_seq_len 2048, 1000 codes
UNWRITABLE = "/proc/lumos-no-such-dir"     # even root cannot create files under /proc


@pytest.fixture
def out(tmp_path):
    return tmp_path / "out"


def gen(*args, out=None):
    """`lumos generate` on the built-in model with an output in `out`."""
    dest = [] if out is None else ["--out", out / "v.mp4"]
    return ["generate", "--prompt", "a red 3 moving left", "--no-progress", *dest, *args]


def digits_copy(tmp_path, name="model"):
    d = tmp_path / name
    shutil.copytree(DIGITS, d)
    return d


def edit_weights(folder, edit):
    sd = load_file(folder / "model.safetensors")
    edit(sd)
    save_file(sd, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


# ============================================================================================ generate: outputs
def test_output_in_a_folder_that_cannot_be_written(tmp_path):
    refuse(["generate", "--prompt", "a red 3", "--out", f"{UNWRITABLE}/v.mp4"], tmp_path, match="cannot write in /proc")


def test_output_whose_parent_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    refuse(gen("--out", tmp_path / "afile" / "v.mp4"), tmp_path, match="afile is a file, not a folder")


def test_output_that_is_a_folder(tmp_path):
    (tmp_path / "v.mp4").mkdir()
    refuse(gen("--out", tmp_path / "v.mp4"), tmp_path, match="v.mp4: is a folder; give a file name")


def test_output_with_an_unsupported_type(tmp_path, out):
    refuse(gen("--out", out / "v.avi"), tmp_path, match="unsupported output type '.avi'")


def test_output_over_the_input_image(tmp_path):
    from lumos.media import write_image
    write_image(tmp_path / "first.png", np.zeros((64, 64, 3), np.uint8))
    refuse(gen("--image", tmp_path / "first.png", "--out", tmp_path / "first.png"), tmp_path,
           match="would overwrite the input")


@pytest.mark.parametrize("content, message", [
    (b'{"prompt": "a red 3", "out": "../x.png"}\n', r"p.jsonl:1: \"out\" '../x.png' leads outside --out"),
    (b'{"prompt": "a red 3", "out": "/tmp/abs.png"}\n', r"p.jsonl:1: \"out\" '/tmp/abs.png' leads outside --out"),
    (b'{"prompt": "a red 3", "out": "a.mp4"}\n{"prompt": "a blue 7", "out": "sub/../a.mp4"}\n',
     r"p.jsonl:2: output .*a.mp4 is written by .*p.jsonl:1 too"),
    (b'{"prompt": "a red 3", "out": "a.mp4"}\n{"prompt": "a blue 7", "out": "a.gif"}\n',
     r"p.jsonl:2: manifest .*a.json is written by .*p.jsonl:1 too"),
    (b'{"prompt": "a red 3", "seed": -5}\n', r"p.jsonl:1: \"seed\" must be an integer in \[0, 2\*\*63\)"),
    (b'{"prompt": "a caf\xe9 scene"}\n', r"not UTF-8 text \(byte 0xe9 at offset 17\)"),          # Latin-1
])
def test_prompts_file_refused(tmp_path, out, content, message):
    f = tmp_path / "p.jsonl"
    f.write_bytes(content)
    refuse(["generate", "--prompts-file", f, "--out", out], tmp_path, match=message)


def test_prompts_file_manifest_over_the_prompts_file(tmp_path):
    f = tmp_path / "p.json"                             # a manifest of p.png would be p.json: this file
    f.write_text('{"prompt": "a red 3", "out": "p.png"}\n')
    refuse(["generate", "--prompts-file", f, "--out", tmp_path], tmp_path, match="would overwrite the input")


def test_prompts_file_out_folder_in_a_folder_that_cannot_be_written(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a red 3"}\n')
    refuse(["generate", "--prompts-file", f, "--out", f"{UNWRITABLE}/outs"], tmp_path, match="cannot write in /proc")


# ============================================================================================ generate: numbers
@pytest.mark.parametrize("flag, value, message", [
    ("--guidance-scale", "inf", "--guidance-scale must be a finite number, got inf"),
    ("--guidance-scale", "nan", "--guidance-scale must be a finite number, got nan"),
    ("--temperature", "inf", "--temperature must be a finite number"),
    ("--temperature", "1e-30", r"--temperature must be 0 \(argmax\) or >= 1e-06"),
    ("--remask-temperature", "inf", "--remask-temperature must be a finite number"),
    ("--num-inference-steps", "1000000000", "--num-inference-steps must be >= 1 and <= 1000"),
    ("--seed", "-1", r"--seed must be an integer in \[0, 2\*\*63\), got -1"),
    ("--seed", str(2**70), r"--seed must be an integer in \[0, 2\*\*63\)"),
    ("--top-k", "1000000000", r"top_k 1000000000 is larger than the codebook \(1000 codes\)"),
    ("--window-frames", "0", "--window-frames must be >= 1"),
    ("--sink-frames", "-1", "--sink-frames must be >= 0"),
    ("--height", "100000", "height is too large"),
    ("--num-frames", "1000000000000", "exceed the largest size token"),
    ("--device", "bogus", "device 'bogus': not a device torch knows"),
])
def test_generate_refuses_numbers_out_of_range(tmp_path, out, flag, value, message):
    refuse(gen(flag, value, out=out), tmp_path, match=message)


def test_a_window_longer_than_the_model(tmp_path, out):
    """200 frames roll the built-in model's default window; a window of 60 frames does not fit its positions."""
    refuse(gen("--num-frames", "200", out=out) + ["--window-frames", "60"], tmp_path,
           match="the model has 2048; ask for fewer frames")


def test_prompt_longer_than_the_model(tmp_path, out):
    long = "a red 3 moving left " * 400                 # 2401 tokens of the built-in text tokenizer
    argv = ["generate", "--prompt", long, "--out", out / "v.mp4", "--no-progress"]
    refuse(argv, tmp_path, match=r"2406 prompt tokens .* the model has 2048; .*shorter prompt")


def test_empty_prompt(tmp_path, out):
    refuse(["generate", "--prompt", "   ", "--out", out / "v.mp4"], tmp_path, match="--prompt is empty")


def test_image_that_is_not_an_image(tmp_path, out):
    (tmp_path / "fake.png").write_text("this is not a png")
    refuse(gen("--image", tmp_path / "fake.png", out=out), tmp_path, match="cannot decode .*fake.png")


def test_image_of_12000x12000_pixels(tmp_path, out):
    big = png(tmp_path / "big.png", 12000, 12000)
    assert big.stat().st_size < 100_000
    refuse(gen("--image", big, out=out), tmp_path,
           match=r"12000x12000 pixels: too large to read \(at most 67 megapixels")


def test_image_that_does_not_exist(tmp_path, out):
    refuse(gen("--image", tmp_path / "missing.png", out=out), tmp_path, match="--image .*missing.png: no such file")


def test_model_folder_that_does_not_exist(tmp_path, out):
    refuse(gen("--model", tmp_path / "no-such-model", out=out), tmp_path,
           match="no such folder and not a built-in model")


def test_config_json_that_is_a_list(tmp_path, out):
    d = digits_copy(tmp_path)
    (d / "config.json").write_text("[1, 2, 3]")
    refuse(gen("--model", d, out=out), tmp_path, match="config.json must be a JSON object of keys, got a list")


def test_config_json_with_wrong_nested_types(tmp_path, out):
    d = digits_copy(tmp_path)
    hf = json.loads((d / "config.json").read_text())
    hf["lumos"]["vocab"]["codebook_size"] = "1000"
    (d / "config.json").write_text(json.dumps(hf))
    refuse(gen("--model", d, out=out), tmp_path, match=r"lumos.vocab.codebook_size must be int, got '1000'")
    hf["lumos"]["vocab"] = "compact"
    (d / "config.json").write_text(json.dumps(hf))
    refuse(gen("--model", d, out=out), tmp_path, match=r"lumos.vocab must be dict, got 'compact'")


def test_pickle_bomb_as_the_checkpoint(tmp_path, out):
    d = digits_copy(tmp_path)
    (d / "model.safetensors").unlink()
    marker = tmp_path / "PWNED"
    pickle_bomb(d / "pytorch_model.bin", marker)
    msg = refuse(gen("--model", d, out=out), tmp_path, match="pytorch_model.bin: refused: this pickle file holds more "
                                                             "than tensors.*convert it to safetensors")
    assert not marker.exists() and "weights_only" not in msg


def test_nan_weights(tmp_path, out):
    d = edit_weights(digits_copy(tmp_path), lambda sd: sd["model.layers.3.mlp.down_proj.weight"].view(-1)[7].fill_(
        float("nan")))
    refuse(gen("--model", d, out=out), tmp_path, match="weight 'model.layers.3.mlp.down_proj.weight' holds non-finite")


def test_non_finite_logits_stop_generation_and_nothing_is_written(tmp_path, out):
    # finite weights (3e38 < fp32 max) whose logits overflow: the sampler stops at the first frame
    d = edit_weights(digits_copy(tmp_path), lambda sd: sd["lm_head.weight"].fill_(3e38))
    refuse(gen("--model", d, "--num-frames", "1", "--num-inference-steps", "2", out=out), tmp_path,
           match=r"generation stopped: the model's logits are not finite \(NaN or inf\) in latent frame 1/1")


# ============================================================================================ bench
@pytest.mark.parametrize("args, message", [
    (["--device", "bogus"], "device 'bogus': not a device torch knows"),
    (["--device", "cuda:99"], "cuda"),
    (["--device", "meta"], "device meta holds no data"),
    (["--text-len", "100000"], r"100005 prompt tokens .* the model has 2048; ask for fewer frames"),
    (["--frames", "1000000000"], "the model has 2048"),
    (["--height", "4096", "--width", "4096"], "does not fit the vocabulary"),
    (["--preset", "tiny", "--top-k", "100000"], r"larger than the codebook \(64 codes\)"),
    (["--guidance-scale", "nan"], "--guidance-scale must be a finite number"),
    (["--seed", "-1"], r"--seed must be an integer in \[0, 2\*\*63\)"),
    (["--steps", "5000"], "--num-inference-steps/--steps must be >= 1 and <= 1000"),
])
def test_bench_refuses(tmp_path, args, message):
    refuse(["bench", "--repeats", "1", *args], tmp_path, match=message)


def test_bench_model_with_a_bad_config(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    hf = json.loads((DIGITS / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**hf, "hidden_size": "192"}))
    refuse(["bench", "--model", d], tmp_path, match="hidden_size must be int, got '192'")


# ============================================================================================ eval, demo
@pytest.mark.parametrize("command, args, message", [
    ("eval", ["--out", f"{UNWRITABLE}/eval"], "cannot write in /proc"),
    ("eval", ["--seed", "-1"], r"--seed must be an integer in \[0, 2\*\*63\)"),
    ("eval", ["--temperature", "inf"], "--temperature must be a finite number"),
    ("eval", ["--top-k", "1000000"], r"larger than the codebook \(1000 codes\)"),
    ("eval", ["--device", "bogus"], "not a device torch knows"),
    ("demo", ["--seed", str(2**70)], r"--seed must be an integer in \[0, 2\*\*63\)"),
    ("demo", ["--out", f"{UNWRITABLE}/demo"], "cannot write in /proc"),
    ("demo", ["--model", "/no/such/model"], "no such folder and not a built-in model"),
])
def test_eval_and_demo_refuse(tmp_path, command, args, message):
    refuse([command, "--out", tmp_path / command, "--no-progress", *args], tmp_path, match=message)


def test_eval_out_is_a_file(tmp_path):
    (tmp_path / "report").write_text("x")
    refuse(["eval", "--out", tmp_path / "report"], tmp_path, match="report is a file, not a folder")


def test_demo_out_is_a_file_or_holds_a_folder_where_a_file_goes(tmp_path):
    (tmp_path / "demo").write_text("x")
    refuse(["demo", "--out", tmp_path / "demo"], tmp_path, match="is a file; give a folder")
    (tmp_path / "demo").unlink()
    (tmp_path / "demo" / "t2v.gif").mkdir(parents=True)
    refuse(["demo", "--out", tmp_path / "demo"], tmp_path, match="t2v.gif: is a folder")


# ============================================================================================ the Python API
@pytest.mark.parametrize("kwargs, message", [
    (dict(guidance_scale=float("inf")), "guidance_scale must be a finite number"),
    (dict(temperature=float("nan")), "temperature must be a finite number"),
    (dict(remask_temperature=float("-inf")), "remask_temperature must be a finite number"),
    (dict(num_inference_steps=10**9), "num_inference_steps must be >= 1 and <= 1000"),
    (dict(top_p=float("nan")), "top_p must be a finite number"),
])
def test_sample_config_refuses(tmp_path, kwargs, message):
    refuse_api(lambda: SampleConfig(**kwargs), tmp_path, match=message)


def test_pipeline_top_k_beyond_the_codebook(tmp_path):
    pipe = tiny_pipe()
    refuse_api(lambda: pipe("a red 3", top_k=65, progress=False), tmp_path, match=r"codebook \(64 codes\)")


def test_pipeline_prompt_longer_than_the_model(tmp_path):
    pipe = tiny_pipe()                                   # one token per character, max_seq_len 2048
    refuse_api(lambda: pipe("x" * 2400, progress=False), tmp_path, match="the model has 2048; .*shorter prompt")


def test_pipeline_image_of_12000x12000_pixels(tmp_path):
    big = png(tmp_path / "big.png", 12000, 12000)
    refuse_api(lambda: tiny_pipe()("a red 3", image=big, progress=False), tmp_path, match="too large to read")


def test_pipeline_non_finite_logits(tmp_path):
    pipe = tiny_pipe()
    with torch.no_grad():
        pipe.model.lm_head.weight.fill_(3e38)
    refuse_api(lambda: pipe("a red 3", progress=False), tmp_path, match="logits are not finite")


def test_pipeline_from_pretrained_bad_model_and_device(tmp_path):
    refuse_api(lambda: LumosPipeline.from_pretrained(tmp_path / "nope"), tmp_path, match="no such folder")
    refuse_api(lambda: LumosPipeline.from_pretrained("moving-digits", device="bogus"), tmp_path,
               match="not a device torch knows")


@pytest.fixture
def tiny_dir(tmp_path):
    d = tmp_path / "tiny"
    LumosModel.from_config(ModelConfig.from_name("tiny"), seed=0).save_pretrained(d, dtype=torch.float32)
    return d


def test_from_pretrained_nan_and_inf_weights(tiny_dir, tmp_path):
    edit_weights(tiny_dir, lambda sd: sd["model.norm.weight"].__setitem__(3, float("inf")))
    refuse_api(lambda: LumosModel.from_pretrained(tiny_dir), tmp_path,
               match="weight 'model.norm.weight' holds non-finite")


def test_from_pretrained_weights_overflowing_the_dtype(tiny_dir, tmp_path):
    edit_weights(tiny_dir, lambda sd: sd["lm_head.weight"].view(-1)[0].fill_(1e6))     # > fp16's 65504
    assert LumosModel.from_pretrained(tiny_dir) is not None
    refuse_api(lambda: LumosModel.from_pretrained(tiny_dir, dtype=torch.float16), tmp_path,
               match="weight 'lm_head.weight' holds non-finite values .* in float16")


def test_from_pretrained_pickle_bomb(tiny_dir, tmp_path):
    (tiny_dir / "model.safetensors").unlink()
    marker = tmp_path / "PWNED"
    pickle_bomb(tiny_dir / "pytorch_model.bin", marker)
    refuse_api(lambda: LumosModel.from_pretrained(tiny_dir), tmp_path, match="holds more than tensors")
    assert not marker.exists()


def test_from_pretrained_config_with_wrong_types(tiny_dir, tmp_path):
    hf = json.loads((tiny_dir / "config.json").read_text())
    for key, value, message in (("num_attention_heads", 2.5, "num_attention_heads must be int"),
                                ("mm_rope", "yes", "mm_rope must be bool"),
                                ("rms_norm_eps", float("nan"), "rms_norm_eps must be a finite float"),
                                ("num_hidden_layers", 0, "n_layers must be >= 1")):
        (tiny_dir / "config.json").write_text(json.dumps({**hf, key: value}))
        refuse_api(lambda: LumosModel.from_pretrained(tiny_dir), tmp_path, match=message)


# ============================================================================================ valid after all
@pytest.mark.parametrize("edge, same", [
    (dict(guidance_scale=0.0), dict(guidance_scale=1.0)),         # 0 means "off", like 1 (not "unconditional")
    (dict(top_k=64), dict()),                                     # top_k = the codebook: all codes
])
def test_edge_values_that_are_valid(edge, same):
    pipe = tiny_pipe()
    a, b = (pipe("a red 3", generator=torch.Generator().manual_seed(0), progress=False, output_type="codes", **kw).frames[0]
            for kw in (edge, same))
    assert torch.equal(a, b)


def test_limits_themselves_are_accepted():
    assert SampleConfig(num_inference_steps=1000, temperature=0.0, guidance_scale=0.0).num_inference_steps == 1000
    assert SampleConfig(temperature=1e-6).temperature == 1e-6


def test_largest_seed_and_a_prompts_file_out_in_a_subfolder(tmp_path):
    out = tmp_path / "out"
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": "a red 3", "seed": 2**63 - 1, "out": "sub/../deep/x.png"}) + "\n")
    assert main(["generate", "--prompts-file", str(f), "--out", str(out), "--num-frames", "1",
                 "--num-inference-steps", "1", "--no-progress"]) == 0
    assert json.loads((out / "deep" / "x.json").read_text())["seed"] == 2**63 - 1
