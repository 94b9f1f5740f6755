"""diffusers conventions of `LumosPipeline` (on the tiny pipeline of test_pipeline_cli): the output
container and its types, negative prompts, the step callback, generators, batching, `to`, progress bars."""

import numpy as np
import pytest
import torch

import lumos
import lumos.pipeline as P
from lumos.utils import LumosError
from test_pipeline_cli import gen, tiny_pipe

PROMPT = "a red 3 moving left"


def codes_of(pipe, prompt=PROMPT, **kw):
    return pipe(prompt, output_type="codes", progress=False, **kw).frames


def test_output_container_and_return_dict():
    pipe = tiny_pipe()
    out = pipe(PROMPT, generator=gen(0), progress=False)
    assert isinstance(out, lumos.LumosPipelineOutput) and isinstance(out.frames, list) and len(out.frames) == 1
    (frames,) = pipe(PROMPT, generator=gen(0), progress=False, return_dict=False)
    assert isinstance(frames, list) and np.array_equal(frames[0], out.frames[0])
    with pytest.raises(LumosError, match="output_type"):
        pipe(PROMPT, output_type="pixels")


def test_output_types_agree_after_conversion():
    pipe = tiny_pipe()
    out = {t: pipe(PROMPT, generator=gen(0), progress=False, output_type=t).frames[0] for t in P.OUTPUT_TYPES}
    np_ = out["np"]
    assert np_.dtype == np.uint8 and np_.shape == (9, 16, 24, 3)
    assert out["pt"].dtype == torch.float32 and out["pt"].shape == (9, 3, 16, 24)       # diffusers: [T, 3, H, W]
    assert 0 <= out["pt"].min() and out["pt"].max() <= 1
    assert np.array_equal((out["pt"] * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy(), np_)
    assert len(out["pil"]) == 9 and out["pil"][0].size == (24, 16)
    assert np.array_equal(np.stack([np.asarray(im) for im in out["pil"]]), np_)
    assert out["codes"].shape == (3, 2, 3) and np.array_equal(pipe.decode(out["codes"], 9), np_)


# ============================================================================================ negative prompts
def test_negative_prompt_changes_the_uncond_rows_only():
    pipe = tiny_pipe(prompt_template="{caption}")             # the bare text (a negative prompt is templated too)
    _, plain, _ = pipe.prepare(["a red 3", "a blue 7 moving up"], None, None, 2, {})
    _, neg, _ = pipe.prepare(["a red 3", "a blue 7 moving up"], None, None, 2, {}, negative_prompt=["red", "blue"])
    n = plain.n_cond
    assert n == 4 and neg.tokens.shape[0] == plain.tokens.shape[0] == 8
    # the cond rows: the same real tokens at the same positions (the padding may differ in width only)
    for i in range(n):
        for a, b in ((plain.tokens, neg.tokens), (plain.pos.text, neg.pos.text), (plain.pos.thw, neg.pos.thw)):
            assert torch.equal(a[i][plain.valid[i]], b[i][neg.valid[i]])
    vocab = pipe.model.config.vocab
    for i in range(n):
        u_plain, u_neg = plain.tokens[n + i][plain.valid[n + i]], neg.tokens[n + i][neg.valid[n + i]]
        assert u_plain[0] == vocab.video_start                                   # today: no text
        neg_ids = torch.as_tensor(vocab.text_turn(pipe.text_tokenizer.encode(["red", "blue"][i // 2])))
        assert torch.equal(u_neg, torch.cat([neg_ids, u_plain]))                # BOS negative SEP VIDEO_START ...
    assert neg.video_col == plain.video_col == max(len(t) for t in ["a red 3", "a blue 7 moving up"]) + 2
    # with guidance off there are no uncond rows: the negative prompt changes nothing
    _, off_plain, _ = pipe.prepare("a red 3", None, None, 1, {"guidance_scale": 1.0})
    _, off_neg, _ = pipe.prepare("a red 3", None, None, 1, {"guidance_scale": 1.0}, negative_prompt="red")
    assert torch.equal(off_plain.tokens, off_neg.tokens) and off_neg.tokens.shape[0] == 1
    a = codes_of(pipe, generator=0, guidance_scale=1.0)[0]
    assert torch.equal(a, codes_of(pipe, generator=0, guidance_scale=1.0, negative_prompt="red")[0])
    assert not torch.equal(codes_of(pipe, generator=0)[0], codes_of(pipe, generator=0, negative_prompt="red")[0])
    with pytest.raises(LumosError, match="negative_prompt"):
        pipe(["a", "b"], negative_prompt=["x"], progress=False)


def test_negative_prompt_longer_than_the_prompt_shifts_padding_only():
    pipe = tiny_pipe()
    long_negative = "a very long negative prompt, much longer than the prompt"
    pipe.defaults.prompt_template = "{caption}"
    _, plan, _ = pipe.prepare("a red 3", None, None, 1, {}, negative_prompt=long_negative)
    assert plan.video_col == len(long_negative) + 2
    assert int(plan.valid[0].sum()) == plan.tokens.shape[1] - plan.video_col + len("a red 3") + 2


# ============================================================================================ step callback
def test_callback_stops_after_a_frame():
    pipe = tiny_pipe()
    full = codes_of(pipe, generator=gen(0))[0]                                  # 3 latent frames
    seen = []

    def stop_after_frame_1(p, frame, step, state):
        seen.append((frame, step, int((state["codes"] == -1).sum())))
        assert p is pipe and state["codes"].shape == (1, 2, 3) and (state["frame"], state["step"]) == (frame, step)
        if frame == 1 and step == 1:                                             # the last of 2 steps
            p._interrupt = True

    out = codes_of(pipe, generator=gen(0), callback_on_step_end=stop_after_frame_1)[0]
    assert [s[:2] for s in seen] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert seen[1][2] == seen[3][2] == 0                                        # a finished frame has no MASK
    assert torch.equal(out, full[:2])                                          # the frames done, as in the full run
    assert pipe.interrupt
    video = pipe(PROMPT, generator=gen(0), progress=False, callback_on_step_end=stop_after_frame_1).frames[0]
    assert video.shape == (5, 16, 24, 3)                                        # 2 latent frames decoded
    # stopped before a frame's last step: that frame is dropped; nothing done: no frames
    out = codes_of(pipe, generator=gen(0), callback_on_step_end=lambda p, f, s, st: setattr(p, "_interrupt", True))[0]
    assert out.shape == (0, 2, 3)
    assert pipe(PROMPT, progress=False, callback_on_step_end=lambda p, f, s, st: setattr(p, "_interrupt", True)
                ).frames[0].shape == (0, 16, 24, 3)
    # the flag is reset by the next call; next-token mode calls it once per code
    steps = []
    codes_of(pipe, generator=gen(0), mode="next-token", callback_on_step_end=lambda p, f, s, st: steps.append((f, s)))
    assert not pipe.interrupt and len(steps) == 3 * 6


def test_stream_takes_output_type_and_the_step_callback():
    pipe = tiny_pipe()
    full = codes_of(pipe, generator=gen(0))[0]                                  # 3 latent frames
    chunks = list(pipe.stream(PROMPT, generator=gen(0), progress=False, output_type="codes"))
    assert [c.shape for c in chunks] == [(1, 2, 3)] * 3 and torch.equal(torch.cat(chunks), full)
    pt = list(pipe.stream(PROMPT, generator=gen(0), progress=False, output_type="pt"))
    assert [c.shape for c in pt] == [(1, 3, 16, 24), (4, 3, 16, 24), (4, 3, 16, 24)]
    pil = list(pipe.stream(PROMPT, generator=gen(0), progress=False, output_type="pil"))
    assert [len(c) for c in pil] == [1, 4, 4] and pil[0][0].size == (24, 16)

    def stop_after_frame_1(p, frame, step, state):
        if frame == 1 and step == 1:
            p._interrupt = True

    got = list(pipe.stream(PROMPT, generator=gen(0), progress=False, output_type="codes",
                           callback_on_step_end=stop_after_frame_1))
    assert len(got) == 2 and torch.equal(torch.cat(got), full[:2]) and pipe.interrupt
    with pytest.raises(LumosError, match="output_type"):
        next(pipe.stream(PROMPT, output_type="pixels"))


# ============================================================================================ generators
def test_int_seed_equals_a_generator_seeded_with_it():
    pipe = tiny_pipe()
    assert torch.equal(codes_of(pipe, generator=7)[0], codes_of(pipe, generator=gen(7))[0])
    with pytest.raises(LumosError, match="generator"):
        pipe(PROMPT, generator="7", progress=False)
    with pytest.raises(LumosError, match="generator must be an integer"):
        pipe(PROMPT, generator=-1, progress=False)


def test_a_list_of_generators_gives_each_video_its_own():
    pipe = tiny_pipe()
    alone = [codes_of(pipe, generator=gen(s))[0] for s in (1, 2)]
    batch = codes_of(pipe, num_videos_per_prompt=2, generator=[gen(1), gen(2)])
    assert torch.equal(batch[0], alone[0]) and torch.equal(batch[1], alone[1])
    prompts = ["a red 3", "a blue 7 moving up"]                                 # other lengths: other padding
    alone = [codes_of(pipe, p, generator=gen(s))[0] for p, s in zip(prompts, (3, 4))]
    batch = codes_of(pipe, prompts, generator=[gen(3), gen(4)])
    assert torch.equal(batch[0], alone[0]) and torch.equal(batch[1], alone[1])
    with pytest.raises(LumosError, match="2 generators for 4 videos"):
        pipe(prompts, num_videos_per_prompt=2, generator=[gen(3), gen(4)], progress=False)


def test_prompts_and_samples_run_in_one_sampler_call(monkeypatch):
    pipe = tiny_pipe()
    calls = []
    real = P.generate
    monkeypatch.setattr(P, "generate",
                        lambda model, plan, *a, **k: calls.append(plan.n_cond) or real(model, plan, *a, **k))
    out = pipe(["a red 3", "a blue 7 moving up"], num_videos_per_prompt=3, generator=0, progress=False)
    assert calls == [6] and len(out.frames) == 6
    assert not np.array_equal(out.frames[0], out.frames[1])


# ============================================================================================ device, progress
def test_to_moves_the_model_and_returns_the_pipeline():
    pipe = tiny_pipe()
    assert pipe.to(torch.float64) is pipe and next(pipe.model.parameters()).dtype == torch.float64
    assert pipe.to("cpu", torch.float32) is pipe and next(pipe.model.parameters()).dtype == torch.float32
    assert pipe.device.type == "cpu"
    assert codes_of(pipe, generator=0)[0].shape == (3, 2, 3)
    with pytest.raises(LumosError, match="device"):
        pipe.to("nonsense")


def test_progress_bars_are_off_unless_stderr_is_a_terminal(capsys, monkeypatch):
    pipe = tiny_pipe()
    pipe(PROMPT, generator=0)                                                   # pytest's stderr is no terminal
    assert capsys.readouterr().err == ""
    pipe.set_progress_bar_config(disable=False)
    pipe(PROMPT, generator=0)
    assert "frames" in capsys.readouterr().err
    pipe.set_progress_bar_config(disable=True)
    monkeypatch.setattr(P.sys.stderr, "isatty", lambda: True, raising=False)
    pipe(PROMPT, generator=0)
    assert capsys.readouterr().err == ""
    with pytest.raises(LumosError, match="unknown options"):
        pipe.set_progress_bar_config(ncols=80)
