"""The Moving Digits world and the built-in model that lives in it.

`digits` (the world: clips, captions, splits), `train_tokenizer` (the built-in video tokenizer's
trainer), `builtin` (prepare the built-in model's records; export a run into a pipeline folder),
`scoring` (what a generated clip shows: digit, colour, direction, identity), `evaluate` (prompt sets,
runs and reports of `lumos eval`) and `demo` (`lumos demo`).
"""
