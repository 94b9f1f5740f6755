"""`python -m lumos.train CONFIG [--set key=value ...] [--resume]`: the same as `lumos train`; the form
torchrun wants (`torchrun --nproc-per-node N -m lumos.train CONFIG`)."""

import sys

from lumos.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
