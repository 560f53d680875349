"""Data: synthetic scenes (pre-training and a consistent downstream task), easy-VQA (an inconsistent
one, shipped in a pip package), COCO captions and VQAv2 loaders for real runs, image preprocessing,
and nested subsets for the data-size axis. Every loader returns the records of `records.py`."""
