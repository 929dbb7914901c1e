r"""Tables (Markdown, stdout) and the per-language XQuAD-R mAP@20 plot (PNG) of the ablation.

    python scripts/plot_results.py --runs=runs/ablation --png=docs/results_map20.png > results.md

Reads the run directories scripts/run_ablation.sh writes (RUNS/NAME/eval/*.json and
RUNS/NAME/wall_seconds). Runs with several seeds (NAME_s0, NAME_s1, ...) are shown as
"mean ±h" where h is half the range over seeds (for two seeds: half their difference).

The PNG is drawn with NumPy and written with zlib (no plotting library is needed): a grouped bar
chart, one group per XQuAD-R language and the mean, one bar per run 1-4, seed ranges as
whiskers.
"""
import argparse
import glob
import json
import os
import re
import struct
import sys
import zlib

import numpy as np

XQUAD_R_LANGUAGES = ["en", "de", "es", "ru", "zh"]
PARALLEL_LANGUAGES = ["ara", "deu", "ell", "hin", "ron", "rus", "spa", "tha", "tur", "vie", "zho"]
LOW_RESOURCE_LANGUAGES = ["deu", "spa"]

# (row label, run name without the seed suffix).
E5_RUNS = [("1 backbone (no training)", "e5_backbone"),
           ("2 IR", "e5_ir"),
           ("3 IR + semantic", "e5_ir_sem"),
           ("4 IR + semantic + language", "e5_ir_sem_lang"),
           ("5 low-resource (4 with deu+spa pairs only)", "e5_lowres"),
           ("4m = 4 with monolingual z (12 languages)", "e5_ir_sem_lang_mono")]
EMS_RUNS = [("6a EMS: XTR + contrastive", "ems_xtr_cl"), ("6b EMS: contrastive only", "ems_cl")]


# ------------------------------------------------------------------------------------------------
# Reading the runs.
# ------------------------------------------------------------------------------------------------


def read_result(workdir: str):
  """(metrics dict, wall seconds or None) of one run, or None when it has no result yet.

  The result is WORKDIR/eval/eval.json (an evaluation only) or the highest step_N.json.
  """
  files = glob.glob(os.path.join(workdir, "eval", "*.json"))
  if not files:
    return None
  def step(path):
    match = re.search(r"step_(\d+)\.json$", path)
    return int(match.group(1)) if match else -1
  with open(max(files, key=step), encoding="utf-8") as f:
    metrics = json.load(f)["metrics"]
  wall = None
  if os.path.exists(os.path.join(workdir, "wall_seconds")):
    with open(os.path.join(workdir, "wall_seconds"), encoding="utf-8") as f:
      wall = int(f.read().strip())
  return metrics, wall


def read_seeds(runs_dir: str, name: str) -> list:
  """[(seed label, metrics, wall)] of NAME (no seeds) or NAME_s0, NAME_s1, ... that finished."""
  found = []
  for workdir in [os.path.join(runs_dir, name)] + sorted(glob.glob(
      os.path.join(runs_dir, f"{name}_s[0-9]*"))):
    result = read_result(workdir)
    if result is not None:
      found.append((os.path.basename(workdir), *result))
  return found


def summary(values) -> tuple:
  """(mean, half range) of a list of numbers; (nan, nan) when empty."""
  if not values:
    return float("nan"), float("nan")
  values = np.asarray(values, np.float64)
  return float(values.mean()), float((values.max() - values.min()) / 2)


def cell(values, digits: int = 3) -> str:
  """"0.512 ±0.004" over seeds, "0.512" for one, "–" for none."""
  mean, half = summary(values)
  if np.isnan(mean):
    return "–"
  text = f"{mean:.{digits}f}"
  return text + (f" ±{half:.{digits}f}" if len(values) > 1 else "")


def metric_values(seeds: list, key: str) -> list:
  return [m[key] for _, m, _ in seeds if key in m]


def group_mean(metrics: dict, prefix: str, languages) -> float:
  """Mean of `prefix/LANG` over `languages` (all must be present)."""
  return float(np.mean([metrics[f"{prefix}/{l}"] for l in languages]))


# ------------------------------------------------------------------------------------------------
# Markdown tables.
# ------------------------------------------------------------------------------------------------


def markdown_table(header: list, rows: list) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


def xquad_r_table(runs: dict) -> str:
  header = ["run", "seeds"] + XQUAD_R_LANGUAGES + ["mean"]
  rows = []
  for label, name in E5_RUNS:
    seeds = runs[name]
    rows.append([label, str(len(seeds))] + [
        cell(metric_values(seeds, f"xquad-r/map@20/{l}")) for l in XQUAD_R_LANGUAGES + ["mean"]])
  return markdown_table(header, rows)


def tatoeba_languages(runs: dict) -> list:
  """The Tatoeba languages of the first result: the parallel-data ones first, then the rest."""
  for seeds in runs.values():
    for _, metrics, _ in seeds:
      langs = {k.split("/")[-1] for k in metrics if k.startswith("tatoeba/acc/")} - {"mean"}
      if langs:
        return ([l for l in PARALLEL_LANGUAGES if l in langs]
                + sorted(langs - set(PARALLEL_LANGUAGES)))
  return []


def tatoeba_table(runs: dict, run_list: list, languages: list, by_group: bool = True) -> str:
  """Rows: languages and group means; columns: runs. Accuracy = mean of both directions.

  by_group: add the means over run 5's groups (its deu+spa, the 9 parallel-data languages it
  has no pairs for, all 11, the languages no run has pairs for); else only the overall mean.
  """
  others = [l for l in languages if l not in PARALLEL_LANGUAGES]
  groups = [(f"**mean, all {len(languages)}**", languages)]
  if by_group:
    groups = [
        ("**mean, deu+spa** (pairs in run 5)", LOW_RESOURCE_LANGUAGES),
        ("**mean, the 9 other parallel-data languages** (no pairs in run 5)",
         [l for l in PARALLEL_LANGUAGES if l not in LOW_RESOURCE_LANGUAGES]),
        ("**mean, 11 parallel-data languages**", PARALLEL_LANGUAGES),
        (f"**mean, {len(others)} languages without parallel data**", others),
    ] + groups
  header = ["language"] + [label.split(" ")[0] + " " + name.replace("e5_", "")
                           for label, name in run_list]
  rows = []
  for lang in languages:
    rows.append([lang] + [cell(metric_values(runs[name], f"tatoeba/acc/{lang}"))
                          for _, name in run_list])
  for title, langs in groups:
    if not langs or not set(langs) <= set(languages):
      continue
    row = [title]
    for _, name in run_list:
      row.append(cell([group_mean(m, "tatoeba/acc", langs) for _, m, _ in runs[name]
                       if all(f"tatoeba/acc/{l}" in m for l in langs)]))
    rows.append(row)
  return markdown_table(header, rows)


def direction_table(runs: dict, run_list: list, languages: list) -> str:
  """Rows: runs; columns: Tatoeba accuracy xxx->eng, eng->xxx and both, means over languages."""
  rows = []
  for label, name in run_list:
    row = [label]
    for metric in ("acc_x2y", "acc_y2x", "acc"):
      row.append(cell([group_mean(m, f"tatoeba/{metric}", languages) for _, m, _ in runs[name]
                       if all(f"tatoeba/{metric}/{l}" in m for l in languages)]))
    rows.append(row)
  return markdown_table(["run", "xxx→eng", "eng→xxx", "mean of both"], rows)


def seconds_per_step(workdir: str) -> float:
  """Median train step time of a run from its metrics.jsonl, leaving out the first log (which
  holds the compilation): rows per step / examples_per_s. NaN for an evaluation-only run."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return float("nan")
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    config = json.load(f)
  loss, train = config["loss"], config["train"]
  rows = train["batch_size"] if loss["ir_weight"] > 0 else 0
  if any(loss[k] > 0 for k in ("semantic_weight", "language_weight", "xtr_weight",
                               "ems_contrastive_weight")):
    rows += train["parallel_batch_size"]
  if loss["language_weight"] > 0 and config["data"]["mono"]["paths"]:
    rows += train["mono_batch_size"]  # The pipeline reads the mono stream (pipeline.py).
  with open(path, encoding="utf-8") as f:
    rates = [r["examples_per_s"] for r in map(json.loads, f) if "examples_per_s" in r]
  return float(rows / np.median(rates[1:])) if len(rates) > 1 else float("nan")


def wall_table(runs: dict, runs_dir: str) -> str:
  rows = []
  for label, name in E5_RUNS + EMS_RUNS:
    for run_dir, _, wall in runs[name]:
      step = seconds_per_step(os.path.join(runs_dir, run_dir))
      rows.append([label, run_dir, "?" if wall is None else f"{wall / 60:.1f}",
                   "–" if np.isnan(step) else f"{step:.2f}"])
  return markdown_table(["run", "workdir", "wall minutes (start-up + train + eval)",
                         "s / train step (median)"], rows)


# ------------------------------------------------------------------------------------------------
# The PNG: NumPy raster, a 5x7 bitmap font, zlib.
# ------------------------------------------------------------------------------------------------

# 5x7 glyphs, rows top to bottom, "#" = ink.
_FONT = {
    "a": ".....|.....|.###.|....#|.####|#...#|.####", "b": "#....|#....|####.|#...#|#...#|#...#|####.",
    "c": ".....|.....|.####|#....|#....|#....|.####", "d": "....#|....#|.####|#...#|#...#|#...#|.####",
    "e": ".....|.....|.###.|#...#|#####|#....|.###.", "f": "..##.|.#...|####.|.#...|.#...|.#...|.#...",
    "g": ".....|.####|#...#|#...#|.####|....#|.###.", "h": "#....|#....|####.|#...#|#...#|#...#|#...#",
    "i": "..#..|.....|.##..|..#..|..#..|..#..|.###.", "j": "...#.|.....|..##.|...#.|...#.|#..#.|.##..",
    "k": "#....|#....|#..#.|#.#..|##...|#.#..|#..#.", "l": ".##..|..#..|..#..|..#..|..#..|..#..|.###.",
    "m": ".....|.....|##.#.|#.#.#|#.#.#|#.#.#|#.#.#", "n": ".....|.....|####.|#...#|#...#|#...#|#...#",
    "o": ".....|.....|.###.|#...#|#...#|#...#|.###.", "p": ".....|####.|#...#|#...#|####.|#....|#....",
    "q": ".....|.####|#...#|#...#|.####|....#|....#", "r": ".....|.....|#.##.|##..#|#....|#....|#....",
    "s": ".....|.....|.####|#....|.###.|....#|####.", "t": ".#...|.#...|####.|.#...|.#...|.#..#|..##.",
    "u": ".....|.....|#...#|#...#|#...#|#..##|.##.#", "v": ".....|.....|#...#|#...#|#...#|.#.#.|..#..",
    "w": ".....|.....|#...#|#.#.#|#.#.#|#.#.#|.#.#.", "x": ".....|.....|#...#|.#.#.|..#..|.#.#.|#...#",
    "y": ".....|#...#|#...#|#...#|.####|....#|.###.", "z": ".....|.....|#####|...#.|..#..|.#...|#####",
    "0": ".###.|#...#|#..##|#.#.#|##..#|#...#|.###.", "1": "..#..|.##..|..#..|..#..|..#..|..#..|.###.",
    "2": ".###.|#...#|....#|...#.|..#..|.#...|#####", "3": "#####|...#.|..#..|...#.|....#|#...#|.###.",
    "4": "...#.|..##.|.#.#.|#..#.|#####|...#.|...#.", "5": "#####|#....|####.|....#|....#|#...#|.###.",
    "6": "..##.|.#...|#....|####.|#...#|#...#|.###.", "7": "#####|....#|...#.|..#..|.#...|.#...|.#...",
    "8": ".###.|#...#|#...#|.###.|#...#|#...#|.###.", "9": ".###.|#...#|#...#|.####|....#|...#.|.##..",
    ".": ".....|.....|.....|.....|.....|.##..|.##..", "-": ".....|.....|.....|#####|.....|.....|.....",
    "+": ".....|..#..|..#..|#####|..#..|..#..|.....", "@": ".###.|#...#|#.###|#.#.#|#.###|#....|.####",
    ":": ".....|.##..|.##..|.....|.##..|.##..|.....", "(": "...#.|..#..|.#...|.#...|.#...|..#..|...#.",
    ")": ".#...|..#..|...#.|...#.|...#.|..#..|.#...", ",": ".....|.....|.....|.....|.##..|..#..|.#...",
    " ": ".....|.....|.....|.....|.....|.....|.....", "=": ".....|.....|#####|.....|#####|.....|.....",
}
_DESCENDERS = "gpqy"  # Drawn one row lower, so that they hang below the line.
_GLYPHS = {ch: np.array([[c == "#" for c in row] for row in rows.split("|")], bool)
           for ch, rows in _FONT.items()}

COLORS = [(150, 150, 150), (66, 133, 244), (251, 188, 5), (52, 168, 83)]  # runs 1-4


def draw_text(img: np.ndarray, x: int, y: int, text: str, scale: int = 2,
              color=(0, 0, 0)) -> None:
  """Writes lower-case `text` with its top-left corner at (x, y); unknown characters are blank."""
  for i, ch in enumerate(text.lower()):
    glyph = _GLYPHS.get(ch, _GLYPHS[" "])
    block = np.kron(glyph, np.ones((scale, scale), bool))
    x0 = x + i * 6 * scale
    y0 = y + (scale if ch in _DESCENDERS else 0)
    region = img[y0:y0 + block.shape[0], x0:x0 + block.shape[1]]
    region[block[:region.shape[0], :region.shape[1]]] = color


def text_width(text: str, scale: int = 2) -> int:
  return len(text) * 6 * scale - scale


def fill(img: np.ndarray, x0: int, y0: int, x1: int, y1: int, color) -> None:
  img[max(min(y0, y1), 0):max(y0, y1), max(min(x0, x1), 0):max(x0, x1)] = color


def write_png(path: str, img: np.ndarray) -> None:
  """Writes an [H, W, 3] uint8 image as an 8-bit RGB PNG."""
  height, width, _ = img.shape
  raw = b"".join(b"\x00" + img[row].tobytes() for row in range(height))

  def chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n")
    f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
    f.write(chunk(b"IDAT", zlib.compress(raw, 9)))
    f.write(chunk(b"IEND", b""))


def bar_chart(groups: list, series: list, title: str) -> np.ndarray:
  """A grouped bar chart.

  Args:
    groups: G group labels (x axis).
    series: [(label, means [G], half ranges [G] or None)] one per bar of each group.
    title: drawn at the top.

  Returns:
    [H, W, 3] uint8 image.
  """
  width, height = 1000, 560
  left, right, top, bottom = 80, 20, 60, 110
  img = np.full((height, width, 3), 255, np.uint8)
  plot_h = height - top - bottom
  means = np.array([s[1] for s in series], np.float64)
  y_max = max(0.1, np.ceil(np.nanmax(means) * 10 + 0.5) / 10)
  to_y = lambda v: int(round(top + plot_h * (1 - v / y_max)))
  draw_text(img, (width - text_width(title)) // 2, 18, title)
  for tick in np.arange(0, y_max + 1e-9, 0.1):  # Grid and y labels.
    y = to_y(tick)
    fill(img, left, y, width - right, y + 1, (225, 225, 225))
    draw_text(img, left - 8 - text_width(f"{tick:.1f}"), y - 7, f"{tick:.1f}")
  fill(img, left, top, left + 2, to_y(0) + 1, (0, 0, 0))
  fill(img, left, to_y(0), width - right, to_y(0) + 2, (0, 0, 0))
  group_w = (width - left - right) / len(groups)
  bar_w = int(group_w * 0.8 / len(series))
  for g, label in enumerate(groups):
    x_group = left + g * group_w + group_w * 0.1
    for s, (_, values, halves) in enumerate(series):
      value = values[g]
      if np.isnan(value):
        continue
      x0 = int(x_group + s * bar_w)
      fill(img, x0 + 1, to_y(value), x0 + bar_w - 1, to_y(0), COLORS[s % len(COLORS)])
      half = halves[g] if halves is not None and not np.isnan(halves[g]) else 0.
      if half > 0:  # Seed range whisker.
        xc = x0 + bar_w // 2
        fill(img, xc, to_y(value + half), xc + 2, to_y(value - half) + 1, (0, 0, 0))
      number = f"{value:.2f}"[1:] if value < 1 else f"{value:.1f}"
      draw_text(img, x0 + (bar_w - text_width(number, 1)) // 2, to_y(value + half) - 10,
                number, 1)
    draw_text(img, int(left + g * group_w + (group_w - text_width(label)) / 2), to_y(0) + 10,
              label)
  x = left
  for s, (label, _, _) in enumerate(series):  # Legend.
    fill(img, x, height - 40, x + 16, height - 24, COLORS[s % len(COLORS)])
    draw_text(img, x + 22, height - 39, label)
    x += 22 + text_width(label) + 30
  return img


def map20_plot(runs: dict, path: str) -> None:
  groups = XQUAD_R_LANGUAGES + ["mean"]
  series = []
  short = {"e5_backbone": "1 backbone", "e5_ir": "2 ir", "e5_ir_sem": "3 ir+sem",
           "e5_ir_sem_lang": "4 ir+sem+lang"}
  for name, label in short.items():
    stats = [summary(metric_values(runs[name], f"xquad-r/map@20/{g}")) for g in groups]
    series.append((label, [m for m, _ in stats], [h for _, h in stats]))
  img = bar_chart(groups, series, "xquad-r map@20, zero-shot (multilingual-e5-small)")
  write_png(path, img)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--runs", default="runs/ablation", help="the run directories' parent")
  parser.add_argument("--png", default="docs/results_map20.png", help="where the plot goes")
  args = parser.parse_args(argv)
  runs = {name: read_seeds(args.runs, name) for _, name in E5_RUNS + EMS_RUNS}
  if not runs["e5_backbone"]:
    sys.exit(f"{args.runs}/e5_backbone/eval/eval.json not found: run scripts/run_ablation.sh")
  languages = tatoeba_languages(runs)
  print("## XQuAD-R mAP@20 (zero-shot; questions of each language against the pool of all 5)\n")
  print(xquad_r_table(runs))
  print("\n## Tatoeba accuracy (mean of xxx->eng and eng->xxx), runs 1-5\n")
  print(tatoeba_table(runs, E5_RUNS, languages))
  print(f"\n## Tatoeba accuracy by direction, mean over the {len(languages)} languages\n")
  print(direction_table(runs, E5_RUNS, languages))
  print("\n## EMS from scratch: Tatoeba accuracy, 11 parallel-data languages\n")
  print(tatoeba_table(runs, EMS_RUNS, PARALLEL_LANGUAGES, by_group=False))
  print("\nBy direction, mean over the 11 languages:\n")
  print(direction_table(runs, EMS_RUNS, PARALLEL_LANGUAGES))
  print("\n## Wall time per run\n")
  print(wall_table(runs, args.runs))
  map20_plot(runs, args.png)
  print(f"\n(plot: {args.png})", file=sys.stderr)


if __name__ == "__main__":
  main()
