"""Export a trained run as a Hugging Face / sentence-transformers directory.

    python -m lair.export --workdir RUN_DIR --out DIR [--step N | --step best] [--overwrite]

Restores the retriever params of the latest checkpoint (step N; or with `best`, the best
evaluation's params kept by config.eval.select_best) of a `python -m lair.train` workdir,
rebuilds the model from the workdir's model.json and tokenizer/, and writes them with
`lair.models.hf.export_hf` (transformers.AutoModel and SentenceTransformer load the result).
The run's config.json gives the query/passage prefixes (sentence-transformers prompts); any
key of it can be overridden with --config.KEY=VALUE (e.g. --config.model.query_prefix="q: ").

A non-empty --out is refused unless --overwrite (which replaces it whole, and only a model
folder: one with a config.json); so is an --out that is the run directory, inside it (other
than WORKDIR/hf), a folder that holds it, or another training run.
"""
import pathlib
from typing import Optional

from absl import flags

from lair import checkpoint
from lair import cli
from lair import configs
from lair import inference
from lair import sharding
from lair import workdir as workdir_lib
from lair.errors import ConfigError
from lair.models import hf


def export(workdir: str, out: str, step=None, *, prompts: Optional[dict] = None,
           overwrite: bool = False) -> pathlib.Path:
  """Writes checkpoint `step` (default: latest; "best") of `workdir` to `out`; returns out.

  `prompts` default to the run's model.query_prefix / passage_prefix (config.json).
  """
  run = workdir_lib.Workdir(workdir)
  if run.owns(out):
    raise ConfigError(f"--out={out} is inside the run {run.root}, whose files it would "
                      f"overwrite", hint=f"export to {run.hf_dir} or a folder outside the run")
  if run.inside(out):
    raise ConfigError(f"--out={out} holds the run {run.root}, which replacing it would delete",
                      hint=f"export to {run.hf_dir} or a folder outside the run")
  if workdir_lib.Workdir(out).is_run():
    raise ConfigError(f"--out={out} is another lair training run (it has model.json), which "
                      f"replacing it would delete", hint="export to OUT/hf or a new folder")
  rcfg, tokenizer = run.read_model()
  if tokenizer is None:
    raise FileNotFoundError(f"--workdir={workdir}: no tokenizer/ folder; export needs the "
                            f"run's tokenizer (runs whose config trains or imports one save it)")
  if prompts is None:
    prompts = read_prompts(run)
  step, params = checkpoint.restore_run_params(run, step)
  path = hf.export_hf(params["retriever"], rcfg, tokenizer, out, prompts=prompts,
                      overwrite=overwrite)
  print(f"exported step {step} of {run.root} to {path}", flush=True)
  return path


def read_prompts(run: workdir_lib.Workdir) -> dict[str, str]:
  """{"query", "passage"}: the text prefixes of the run's config.json ("" when unset)."""
  model = run.read_config().model
  return {"query": model.query_prefix, "passage": model.passage_prefix}


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", None, "a lair training workdir", flag_values=fv)
  flags.DEFINE_string("out", None, "the Hugging Face directory to write", flag_values=fv)
  flags.DEFINE_string("step", None, "checkpoint step, or 'best' (default: the latest)",
                      flag_values=fv)
  flags.DEFINE_boolean("overwrite", False, "replace a non-empty --out whole", flag_values=fv)


def main(argv) -> None:
  config, fv = configs.parse_command_line(
      argv, define_flags, default_config_file=inference.default_config_file(argv))
  if not fv.workdir or not fv.out:
    raise ConfigError("--workdir=RUN_DIR and --out=DIR are required")
  # Under a cluster every process runs launch/run.sh, so every process gets here: process 0
  # exports (as a single process), the others leave it the folder.
  if sharding.launcher_process_index() != 0:
    return
  export(fv.workdir, fv.out, checkpoint.parse_step(fv.step),
         prompts={"query": config.model.query_prefix, "passage": config.model.passage_prefix},
         overwrite=fv.overwrite)


if __name__ == "__main__":
  cli.run(main)
