r"""Tables and pictures of the ablation in docs/results.md, from the runs' own files.

    python scripts/plot_results.py --runs=runs/ablation > runs/ablation/results.md
    python scripts/plot_results.py --runs=runs/lr1e-4 --out=docs   # the pictures docs/ shows

Reads RUNS/NAME/eval/step_N.json (training runs, NAME = VARIANT_sSEED), RUNS/backbone/eval/
eval.json, RUNS/tatoeba_{backbone,recipe}/eval/eval.json and each run's metrics.jsonl (step
times, the language loss's identity/noise split). Prints Markdown tables (seeds as mean ± half
the range) and writes, with matplotlib (`pip install -e '.[plots]'`), into OUT (default: RUNS, so
that exploring runs never overwrite the pictures committed in docs/):
  OUT/results_map20.png     XQuAD-R mAP@20 per question language for every variant
  OUT/results_bias.png      question x answer language recall@20: the backbone and the recipe
"""
import argparse
import collections
import json
import pathlib
import re
import sys

import numpy as np

LANGS = ["en", "de", "es", "ru", "zh"]
ORDER = ["backbone", "ir", "ir_sem", "ir_sem_hn", "ir_sem_bs", "ir_sem_bs_hn", "lang_0.1",
         "lang_0.1_sg", "lang_0.3", "lang_0.3_sg", "lang_0.3_sg_bs_hn", "lang_1", "lang_1_sg",
         "lowres"]


def load_json(path: pathlib.Path):
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def final_metrics(run: pathlib.Path) -> dict:
  """The metrics of the run's last evaluation (training runs) or eval.json (lair.evaluate)."""
  evals = sorted((run / "eval").glob("step_*.json"), key=lambda p: int(p.stem.split("_")[1]))
  path = evals[-1] if evals else run / "eval" / "eval.json"
  return load_json(path)["metrics"] if path.exists() else {}


def step_seconds(run: pathlib.Path) -> float:
  """Median seconds a training step took (metrics.jsonl's rates, the first window left out)."""
  config = load_json(run / "config.json")
  rows = [json.loads(l) for l in open(run / "metrics.jsonl", encoding="utf-8")]
  rows = [r for r in rows if "examples_per_s" in r][1:]
  if not rows:
    return float("nan")
  train = config["train"]
  per_step = train["batch_size"]
  if config["loss"]["semantic_weight"] or config["loss"]["language_weight"]:
    per_step += train["parallel_batch_size"]
  if config["loss"]["language_weight"] and config["loss"]["language_inputs"] != "ir":
    per_step += train["mono_batch_size"]
  return float(np.median([per_step / r["examples_per_s"] for r in rows if r["examples_per_s"]]))


def language_split(run: pathlib.Path):
  """(identity, noise) of the language loss at the first and at the last log, or None."""
  rows = [json.loads(l) for l in open(run / "metrics.jsonl", encoding="utf-8")]
  rows = [r for r in rows if "language_identity" in r]
  if not rows:
    return None
  return [(r["language_identity"], r["language_noise"]) for r in (rows[0], rows[-1])]


def collect(runs: pathlib.Path) -> dict:
  """{variant: [(seed, run folder, metrics)]}, backbone included."""
  out = collections.defaultdict(list)
  for run in sorted(p for p in runs.iterdir() if p.is_dir()):
    match = re.fullmatch(r"(.+)_s(\d+)", run.name)
    if run.name == "backbone":
      out["backbone"].append((None, run, final_metrics(run)))
    elif match and (run / "DONE").exists():
      out[match[1]].append((int(match[2]), run, final_metrics(run)))
  return out


def spread(values) -> str:
  values = [v for v in values if v == v]
  if not values:
    return "-"
  if len(values) == 1:
    return f"{values[0]:.3f}"
  return f"{np.mean(values):.3f} ±{(max(values) - min(values)) / 2:.3f}"


def ordered(data: dict) -> list:
  """The variants of `data` in ORDER, then any others (e.g. lang_0.3_sg_bs_hn) by name."""
  return [n for n in ORDER if n in data] + sorted(set(data) - set(ORDER))


def variant_table(data: dict) -> str:
  head = ("| run | seeds | XQuAD-R mAP@20 | " + " | ".join(LANGS)
          + " | own-language excess@20 | language-ID probe | s/step |")
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for name in ordered(data):
    rows = data[name]
    get = lambda key: [m.get(key, float("nan")) for _, _, m in rows]
    cells = [spread(get("xquad-r/map@20/mean"))]
    cells += [spread(get(f"xquad-r/map@20/{l}")) for l in LANGS]
    cells += [spread(get("xquad-r/bias/own_excess@20/mean")), spread(get("langid/acc/mean"))]
    times = [step_seconds(run) for _, run, _ in rows if (run / "metrics.jsonl").exists()]
    cells.append(f"{np.mean(times):.1f}" if times else "-")
    lines.append(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def language_table(data: dict) -> str:
  lines = ["| run | seed | identity (first log) | noise (first log) | identity (last) | noise "
           "(last) |", "|---|---|---|---|---|---|"]
  for name in [n for n in ordered(data) if n.startswith("lang_")]:
    for seed, run, _ in data[name]:
      split = language_split(run)
      if split:
        (i0, n0), (i1, n1) = split
        lines.append(f"| {name} | {seed} | {i0:.2e} | {n0:.2e} | {i1:.2e} | {n1:.2e} |")
  return "\n".join(lines)


def bias_matrix(metrics: dict) -> np.ndarray:
  """[answer language, question language] recall@20 from the bias block."""
  return np.array([[metrics.get(f"xquad-r/bias/recall@20->{a}/{q}", np.nan) for q in LANGS]
                   for a in LANGS])


def tatoeba_table(runs: pathlib.Path) -> str:
  both = {name: final_metrics(runs / f"tatoeba_{name}") for name in ("backbone", "recipe")}
  if not all(both.values()):
    return "(Tatoeba over all languages: not run yet)"
  langs = sorted({k.split("/")[2] for k in both["backbone"] if "/acc_x2y/" in k} - {"mean"})
  lines = ["| | languages | mean acc xx->en | mean acc en->xx | mean acc | languages that fall "
           "(acc) |", "|---|---|---|---|---|---|"]
  for name, metrics in both.items():
    fall = sum(metrics[f"tatoeba/acc/{l}"] < both["backbone"][f"tatoeba/acc/{l}"] - 1e-9
               for l in langs) if name == "recipe" else "-"
    lines.append(f"| {name} | {len(langs)} | {metrics['tatoeba/acc_x2y/mean']:.3f} | "
                 f"{metrics['tatoeba/acc_y2x/mean']:.3f} | {metrics['tatoeba/acc/mean']:.3f} | "
                 f"{fall} |")
  return "\n".join(lines)


def plot(data: dict, recipe: str, out: pathlib.Path) -> None:
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top  (an optional extra: [plots])
  except ImportError:
    sys.exit("scripts/plot_results.py: the tables went to stdout, but the pictures need "
             "matplotlib: pip install -e '.[plots]', then run this script again")
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  # Runs without an XQuAD-R evaluation (a backbone skipped with backbone/DONE, a variant not yet
  # evaluated) have nothing to draw: leave them out rather than draw empty bars.
  data = {name: [r for r in rows if "xquad-r/map@20/mean" in r[2]] for name, rows in data.items()}
  data = {name: rows for name, rows in data.items() if rows}
  if not data:
    print("scripts/plot_results.py: no XQuAD-R evaluation under the runs; no pictures drawn",
          file=sys.stderr)
    return
  out.mkdir(parents=True, exist_ok=True)
  names = ordered(data)
  fig, ax = plt.subplots(figsize=(11, 4.2))
  width = 0.8 / len(names)
  for i, name in enumerate(names):
    values = np.array([[m.get(f"xquad-r/map@20/{l}", np.nan) for l in LANGS + ["mean"]]
                       for _, _, m in data[name]])
    mean = np.nanmean(values, axis=0)
    low, high = mean - np.nanmin(values, axis=0), np.nanmax(values, axis=0) - mean
    ax.bar(np.arange(len(LANGS) + 1) + (i - len(names) / 2 + 0.5) * width, mean, width,
           yerr=[low, high], capsize=2, label=name)
  ax.set_xticks(np.arange(len(LANGS) + 1), LANGS + ["mean"])
  ax.set_ylabel("mAP@20 (full 5-language pool)")
  ax.set_ylim(0, 1)
  ax.axhline(0.70, color="gray", lw=0.8, ls="--")
  ax.legend(ncol=5, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1))
  ax.set_title("XQuAD-R: mAP@20 per question language (bars: mean over seeds; whiskers: range)")
  fig.tight_layout()
  fig.savefig(out / "results_map20.png", dpi=110)
  plt.close(fig)
  print(f"scripts/plot_results.py: drew {out / 'results_map20.png'}", file=sys.stderr)

  panels = [("backbone", data.get("backbone")), (recipe, data.get(recipe))]
  panels = [(n, rows) for n, rows in panels if rows]
  if not panels:
    print(f"scripts/plot_results.py: neither the backbone nor {recipe} has an XQuAD-R evaluation "
          "under the runs; results_bias.png not drawn", file=sys.stderr)
    return
  fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.4), squeeze=False)
  for ax, (name, rows) in zip(axes[0], panels):
    matrix = np.nanmean([bias_matrix(m) for _, _, m in rows], axis=0)
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    for a in range(len(LANGS)):
      for q in range(len(LANGS)):
        ax.text(q, a, f"{matrix[a, q]:.2f}", ha="center", va="center",
                color="white" if matrix[a, q] < 0.6 else "black", fontsize=9)
    ax.set_xticks(range(len(LANGS)), LANGS)
    ax.set_yticks(range(len(LANGS)), LANGS)
    ax.set_xlabel("question language")
    ax.set_ylabel("answer language")
    excess = np.nanmean([m.get("xquad-r/bias/own_excess@20/mean", np.nan) for _, _, m in rows])
    ax.set_title(f"{name}: recall@20 of answers\n(own-language excess {excess:.3f})")
  fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8)
  fig.savefig(out / "results_bias.png", dpi=110)
  plt.close(fig)
  print(f"scripts/plot_results.py: drew {out / 'results_bias.png'}", file=sys.stderr)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--runs", default="runs/ablation")
  parser.add_argument("--out", default="", help="folder for the pictures (default: --runs)")
  parser.add_argument("--recipe", default="", help="variant of the recipe (default: the "
                      "RECIPE of configs/e5_language_agnostic.py)")
  args = parser.parse_args(argv)
  runs = pathlib.Path(args.runs)
  out = pathlib.Path(args.out or args.runs)
  recipe = args.recipe
  if not recipe:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "configs"))
    import e5_language_agnostic  # pylint: disable=g-import-not-at-top
    recipe = e5_language_agnostic.RECIPE
  data = collect(runs)
  print("## Variants (full XQuAD-R development pool)\n")
  print(variant_table(data))
  print("\n## The language loss: identity vs noise in its squared gap\n")
  print(language_table(data))
  print("\n## Tatoeba, every language\n")
  print(tatoeba_table(runs))
  plot(data, recipe, out)


if __name__ == "__main__":
  main()
