"""Evaluation: metrics, ScaNN / exact search, LAReQA / Tatoeba / BEIR sets; `python -m lair.evaluate`.

The trainer calls `run_evaluations(config, params, rcfg, tokenizer, workdir=..., step=...)`.
"""
from lair.evaluate.run import run_evaluations  # noqa: F401
