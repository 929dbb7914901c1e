"""Export a trained run as a Hugging Face / sentence-transformers directory.

    python -m lair.export --workdir RUN_DIR --out DIR [--step N | --step best]

Restores the retriever params of the latest checkpoint (step N; or with `best`, the best
evaluation's params kept by config.eval.select_best) of a `python -m lair.train`
workdir, rebuilds the model from the workdir's model.json and tokenizer/, and writes them with
`lair.models.hf.export_hf` (transformers.AutoModel and SentenceTransformer load the result).
"""
import argparse
import json
import os
import pathlib
import sys
from typing import Optional

from lair.models import hf
from lair.train import checkpoint as checkpoint_lib


def export(workdir: str, out: str, step: Optional[int | str] = None) -> pathlib.Path:
  """Writes checkpoint `step` (default: latest; "best") of `workdir` to `out`; returns out."""
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise FileNotFoundError(f"--workdir={workdir}: no checkpoints/ folder; expected the "
                            f"workdir of a `python -m lair.train` run")
  rcfg, tokenizer = checkpoint_lib.load_model_files(workdir)
  if tokenizer is None:
    raise FileNotFoundError(f"--workdir={workdir}: no tokenizer/ folder; export needs the "
                            f"run's tokenizer (runs whose config trains or imports one save it)")
  prompts = read_prompts(workdir)
  if step == "best":
    # The folder is checked before Checkpoints(), which would create it; training creates it
    # empty when config.eval.select_best is unset.
    best_dir = os.path.join(workdir, "best")
    best = (checkpoint_lib.Checkpoints(workdir, keep=1, folder="best")
            if os.path.isdir(best_dir) else None)
    if best is None or not best.all_steps():
      raise FileNotFoundError(
          f"--step best: {best_dir} holds no best params; the run kept none (training keeps "
          f"them when config.eval.select_best names a metric of config.eval.sets)")
    step, params = best.restore_params()
  else:
    step, params = checkpoint_lib.Checkpoints(workdir).restore_params(step)
  path = hf.export_hf(params["retriever"], rcfg, tokenizer, out, prompts=prompts)
  print(f"exported step {step} of {workdir} to {path}", flush=True)
  return path


def read_prompts(workdir: str) -> dict[str, str]:
  """{"query", "passage"}: the text prefixes of workdir/config.json's model ("" when unset)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: export reads the run's model.query_prefix and "
                            f"model.passage_prefix from it (`python -m lair.train` writes it)")
  with open(path, encoding="utf-8") as f:
    model_cfg = json.load(f).get("model", {})
  return {"query": model_cfg.get("query_prefix", ""),
          "passage": model_cfg.get("passage_prefix", "")}


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m lair.export", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="a lair training workdir")
  parser.add_argument("--out", required=True, help="the Hugging Face directory to write")
  parser.add_argument("--step", default=None,
                      help="checkpoint step, or 'best' (default: the latest checkpoint)")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  step = args.step
  if step is not None and step != "best":
    if not step.isdigit():
      parser.error(f"--step={step}: expected a step number or 'best'")
    step = int(step)
  export(args.workdir, args.out, step)


if __name__ == "__main__":
  main()
