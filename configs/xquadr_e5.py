"""multilingual-e5-small, English-only IR fine-tuning + cross-lingual losses; zero-shot XQuAD-R and Tatoeba.

The ablation of docs/results.md (lair issue 5). `get_config(ARG)` picks the run:

    backbone      run 1: the encoder as it is (evaluate only: python -m lair.evaluate --hf=...)
    ir            run 2: English retrieval loss only (SQuAD question -> answer sentence)
    ir_sem        run 3: + semantic contrastive loss on English<->X parallel pairs (11 languages)
    ir_sem_lang   run 4: + language contrastive loss (z = the English IR queries and passages)
    lowres        run 5: run 4 with parallel pairs for deu and spa only
    ir_sem_lang_mono  run 4 with z = monolingual sentences of all 12 languages (MONO_DIR)

    python -m lair.train --config=configs/xquadr_e5.py:ir_sem --workdir=runs/ablation/ir_sem_s0 \
        --config.seed=0
    bash scripts/run_ablation.sh        # the whole table, resumable

Data paths are config fields; the defaults are the shared locations (`SHARED` below, i.e.
../shared/data next to the repository). Budget (a 2-core CPU, no GPU): batches of 16, queries
cut at 32 tokens, passages and sentences at 64/32, the 96M-parameter token embedding table
frozen (it is 80% of e5-small; freezing also keeps AdamW's state small), 120 steps. The
evaluation sets are slices (see EVAL_* below) so that one evaluation takes a minute or two.
"""
import os
import pathlib

from lair import configs

REPO = pathlib.Path(__file__).resolve().parent.parent
SHARED = pathlib.Path(os.environ.get("LAIR_SHARED_DATA", REPO.parent / "shared" / "data"))
E5_SMALL = os.path.expanduser("~/.cache/lair/multilingual-e5-small")

# The 11 languages with English parallel data in ../shared/data/parallel/en-XXX.tsv.
PARALLEL_LANGUAGES = ["ara", "deu", "ell", "hin", "ron", "rus", "spa", "tha", "tur", "vie", "zho"]
LOW_RESOURCE_LANGUAGES = ["deu", "spa"]  # Run 5: parallel data for these two only.
# 20 more Tatoeba languages with no parallel data at all: zero-shot for every run.
OTHER_TATOEBA_LANGUAGES = ["fra", "ita", "por", "nld", "pol", "ces", "ukr", "bul", "fin", "hun",
                           "swe", "heb", "pes", "ind", "jpn", "kor", "ben", "urd", "swh", "kat"]
# Tatoeba names Mandarin "cmn"; the parallel data calls it "zho". Evaluate it under "zho".
TATOEBA_FILE_CODE = {"zho": "cmn"}
XQUAD_R_LANGUAGES = ["en", "de", "es", "ru", "zh"]

# Evaluation slices, sized for a 2-core CPU (~25-80 sentences/s for e5-small):
EVAL_XQUAD_R_QUESTIONS = 300  # The first 300 question ids (of 1,190) in all 5 languages; the
# pool is every sentence, in all 5 languages, of the paragraphs those questions come from.
EVAL_TATOEBA_PAIRS = 200  # The first 200 pairs of each of 31 languages.

# Monolingual (non-parallel) sentences for the "ir_sem_lang_mono" variant's language loss: files
# MONO_DIR/xxx.txt, one sentence a line, written by scripts/run_ablation.sh (sentences taken one
# side at a time from the parallel TSVs).
MONO_DIR = pathlib.Path(os.environ.get("LAIR_MONO_DIR", REPO / "runs" / "ablation" / "mono"))

RUNS = {  # name -> (ir, semantic, language) weights, parallel languages, language loss's z.
    "backbone": (0., 0., 0., PARALLEL_LANGUAGES, "ir"),
    "ir": (1., 0., 0., PARALLEL_LANGUAGES, "ir"),
    "ir_sem": (1., 1., 0., PARALLEL_LANGUAGES, "ir"),
    "ir_sem_lang": (1., 1., 1., PARALLEL_LANGUAGES, "ir"),
    "lowres": (1., 1., 1., LOW_RESOURCE_LANGUAGES, "ir"),
    # Run 4 with z = monolingual sentences in all 12 languages instead of the English IR text.
    "ir_sem_lang_mono": (1., 1., 1., PARALLEL_LANGUAGES, "mono"),
}


def tatoeba_spec(data_dir: pathlib.Path, lang: str) -> str:
  """"xxx:PATH,eng:PATH" for one Tatoeba language (named by the parallel data's code)."""
  code = TATOEBA_FILE_CODE.get(lang, lang)
  prefix = data_dir / "tatoeba" / f"tatoeba.{code}-eng"
  return f"{lang}:{prefix}.{code},eng:{prefix}.eng"


def get_config(arg="ir_sem_lang"):
  if arg not in RUNS:
    raise ValueError(f"configs/xquadr_e5.py:{arg}: expected one of {sorted(RUNS)}")
  ir_weight, semantic_weight, language_weight, parallel_languages, z_inputs = RUNS[arg]
  c = configs.default_config()
  c.seed = 0

  c.model.hf_path = E5_SMALL
  c.model.pooling = "mean"
  c.model.normalize = True
  c.model.query_prefix = "query: "
  c.model.passage_prefix = "passage: "
  c.model.freeze_embeddings = True

  c.data.languages = ["eng"] + PARALLEL_LANGUAGES
  # Question -> the sentence holding its answer: the same granularity as XQuAD-R's pool, and
  # sentences are ~5x shorter than paragraphs (cheaper steps on this CPU).
  c.data.ir.format = "squad"
  c.data.ir.paths = [str(SHARED / "squad" / "dev-v1.1.minus_xquad_paragraphs.json")]
  c.data.ir.squad_target = "sentence"
  c.data.parallel.format = "tsv"
  c.data.parallel.paths = [str(SHARED / "parallel" / f"en-{l}.tsv") for l in parallel_languages]
  # At most 2,000 pairs per language: deu (56k) would otherwise fill a quarter of every batch
  # and tha (0.7k) almost never appear.
  c.data.parallel.max_pairs_per_language = 2000
  c.data.max_query_len = 32
  c.data.max_passage_len = 64
  c.data.max_sentence_len = 32
  c.data.length_buckets = [16, 32, 64]

  c.loss.tau = 0.05
  c.loss.ir_weight = ir_weight
  c.loss.semantic_weight = semantic_weight
  c.loss.language_weight = language_weight
  # z of the language loss: by default the IR batch's own (English, non-parallel) queries and
  # passages, already embedded for the IR loss, so the term costs no extra encoder pass.
  c.loss.language_inputs = z_inputs
  if z_inputs == "mono":
    c.data.mono.paths = [f"{l}:{MONO_DIR / l}.txt" for l in c.data.languages]

  c.train.batch_size = 16
  c.train.parallel_batch_size = 16
  c.train.mono_batch_size = 16
  c.train.steps = 120
  c.train.learning_rate = 5e-5
  c.train.warmup_steps = 12
  c.train.decay = "linear"
  c.train.log_every = 10
  c.train.checkpoint_every = 40
  c.train.keep_checkpoints = 1

  c.eval.sets = [
      {"name": "xquad-r", "kind": "lareqa",
       "paths": [str(SHARED / "xquad-r" / f"{l}.json") for l in XQUAD_R_LANGUAGES],
       "max_questions": EVAL_XQUAD_R_QUESTIONS},
      {"name": "tatoeba", "kind": "tatoeba",
       "paths": [tatoeba_spec(SHARED, l) for l in PARALLEL_LANGUAGES + OTHER_TATOEBA_LANGUAGES],
       "max_pairs": EVAL_TATOEBA_PAIRS},
  ]
  c.eval.search = "exact"  # Pools of a few thousand: exact search is exact and fast.
  c.eval.batch_size = 32
  return c
