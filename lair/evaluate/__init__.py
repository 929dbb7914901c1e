"""Evaluation: metrics, ScaNN / exact search, LAReQA / Tatoeba / BEIR sets; `python -m lair.evaluate`.

The trainer calls `run_evaluations(config, params, rcfg, tokenizer, workdir=None, step=...)` and
writes eval/step_N.json itself; with a workdir, run_evaluations writes eval/evaluate_step_N.json.
"""
from lair.evaluate.run import run_evaluations  # noqa: F401
