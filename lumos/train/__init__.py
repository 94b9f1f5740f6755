"""Training a Lumos model: discrete diffusion inside frames, AR-DF tube masks across them.

    lumos train configs/tiny.toml                                   # one process (CPU or one GPU)
    torchrun --nproc-per-node 8 -m lumos.train configs/lumos1-finetune.toml     # FSDP2 / DDP

Each module does one job: `config` (TrainConfig and the strict TOML loader), `lr` (the schedule),
`runtime` (torch.distributed set-up), `batches` (deterministic batches from records or synthetic
videos), `masking` (AR-DF masks and CFG dropout), `loss` (chunked visual-vocabulary CE),
`parallelize` (compile, activation checkpointing, FSDP2/DDP applied from outside), `checkpoints`
(atomic checkpoints, DCP, exact resume) and `loop` (the plain training loop).
"""
