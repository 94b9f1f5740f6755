"""Training a Lumos model: discrete diffusion inside frames, AR-DF tube masks across them.

    lumos train configs/tiny.toml                                   # one process (CPU or one GPU)
    torchrun --nproc-per-node 8 -m lumos.train configs/lumos1-finetune.toml     # FSDP2 / DDP

Each module does one job: `config` (TrainConfig and the strict TOML loader with `--set` overrides),
`lr` (the learning-rate schedule), `runtime` (torch.distributed set-up and collectives), `batches`
(deterministic batches from records or synthetic videos), `masking` (AR-DF masks and CFG dropout),
`loss` (chunked visual-vocabulary CE), `parallelize` (compile, activation checkpointing, FSDP2/DDP
applied from outside), `build` (data source, model config, initial weights, the wrapped model),
`checkpoints` (atomic checkpoints, DCP, exact resume), `log` (progress bar, metrics.jsonl,
TensorBoard) and `loop` (the plain training loop). The command line is `lumos.cli.train`.
`config`, `lr`, `runtime` and `checkpoints` also serve the video tokenizer's trainer
(`lumos.world.train_tokenizer`).
"""
