"""Data: token records (sharded, memory-mapped) and the pre-tokenization of media files into them.

`records` is the on-disk format the trainer reads; `pretokenize` (`lumos tokenize`) turns videos,
images and captions into records with the model's video and text tokenizers.
"""
