"""The recipe: multilingual-e5-small made language-agnostic with English IR + parallel pairs.

    python -m lair.train --config=configs/e5_language_agnostic.py --workdir=runs/recipe \
        --config.model.hf_path=~/.cache/lair/multilingual-e5-small

`get_config()` is the recipe; `get_config(VARIANT)` one run of the ablation of docs/results.md
(`bash scripts/run_ablation.sh` runs them all, resumable):

    ir            English retrieval loss only (SQuAD question -> answer sentence)
    ir_sem        + semantic contrastive loss on English<->X pairs (11 languages)
    lang_W[_sg]   + language contrastive loss with weight W in {0.1, 0.3, 1}, its z 32
                  non-parallel sentences per step in all 12 languages (held out of the parallel
                  data, data.mono.from_parallel); _sg: stop-gradient through the pair (x, y)
    lowres        the recipe with parallel pairs for deu and spa only
    VARIANT_bs    VARIANT with the semantic term's negatives from both sides of the pairs
                  (loss.semantic_negatives="both_sides"): a translation must beat the other
                  sentences of its own language too
    VARIANT_hn    VARIANT with one hard negative per question: another sentence of the answer's
                  SQuAD paragraph (data.ir.num_negatives=1), as XQuAD-R's pools hold them
                  (both: VARIANT_bs_hn)

Budget (a 2-core CPU): batches of 64 IR pairs (+ 64 hard negatives with _hn) + 64 parallel
pairs (+ 32 z sentences with the language loss), 200 steps of AdamW at lr 1e-4 (20 warm-up
steps, linear decay), training texts cut at 32 tokens (queries, sentences) and 64 (passages;
evaluation reads whole texts, eval.max_len=512, as the HF export serves them), the token
embedding table frozen (80% of e5-small's parameters; stop-gradiented, so it costs no
gradient). The recipe takes about 18 s a step alone on that CPU (61 minutes of training); the
first four rounds of docs/results.md ran at batches of 32 (about 9.7 s a step, 32 minutes;
--config.train.batch_size=32 --config.train.parallel_batch_size=32).
Evaluation: the full 5-language XQuAD-R development pool (5,950 questions against 6,086
sentences, exact search) with its language-bias block, and a language-ID probe on Tatoeba
sentences of the 5 XQuAD-R languages. The figures each setting reached are in docs/results.md.

The recipe (ir_sem_bs_hn at learning rate 1e-4 and batches of 64: IR with one same-paragraph
hard negative + semantic with both sides as negatives; chosen on these development sets, 2
seeds): XQuAD-R mean mAP@20 0.679 ±0.000 on whole sentences (en 0.741, de 0.676, es 0.696,
ru 0.661, zh 0.621). The figures that follow were all scored with questions cut at 32 tokens
and sentences at 64, as the training rounds were: there the recipe scores 0.671 ±0.000 (en
0.733, de 0.667, es 0.688, ru 0.650, zh 0.615) against the backbone's 0.366, the same settings
at batches of 32's 0.664 ±0.002 and ir_sem's 0.634 ±0.001; own-language excess@20 0.116
(backbone 0.589); language-ID probe 0.57 (backbone 0.995). The issue's target (0.70, no
language below 0.65) is not reached at this budget.
Tatoeba (seed 0's export): 0.917 over 31 languages against the backbone's 0.863 and 0.770
over all 112 against 0.692, no language lower. The language loss (lang_0.3_sg, 2 seeds, lr
5e-5, batches of 32) gave 0.629 ±0.001 against ir_sem's 0.634, and on top of the batch-32
recipe (1 seed each) 0.6627 at weight 0.1, 0.6629 at 0.3 and 0.6620 at 1 (lang_{0.1,0.3,1}_sg_bs_hn)
and 0.6643 at 0.3 and 0.6633 at 0.1 without stop-gradient (lang_{0.3,0.1}_bs_hn) against the
same seed's 0.6625, so the recipe leaves it off. At lr 1e-4 and batches of 32: IR only 0.591
±0.001 (2 seeds; zh 0.479); lowres 0.653 ±0.001 (2 seeds; zh 0.565).
Neither 400 steps (1 seed: 0.665, 54 minutes of training) nor loss.tau 0.02 (1 seed: 0.626,
own-language excess 0.208) or 0.1 (1 seed: 0.651, excess 0.073) beat the batch-32 recipe;
batches of 64 did, in both seeds (fifth round); at batches of 64, lr 2e-4 did not (1 seed:
0.663). On the batch-32 recipe (1 seed each, seventh round), neither 3 hard negatives per
question (0.666 against the same seed's 0.6625, zh lower, own-language excess 0.128) nor
training the token embeddings (0.662, Tatoeba unchanged) beat the seed spread, nor did semantic
weight 2 (eighth round: 0.664); without its hard negative (ir_sem_bs, 1 seed) the batch-32
recipe falls to 0.636.
"""
import os
import pathlib

from lair import configs

REPO = pathlib.Path(__file__).resolve().parent.parent
SHARED = pathlib.Path(os.environ.get("LAIR_SHARED_DATA", REPO.parent / "shared" / "data"))
E5_SMALL = os.path.expanduser("~/.cache/lair/multilingual-e5-small")

# The 11 languages with English parallel data in ../shared/data/parallel/en-XXX.tsv.
PARALLEL_LANGUAGES = ["ara", "deu", "ell", "hin", "ron", "rus", "spa", "tha", "tur", "vie", "zho"]
LOW_RESOURCE_LANGUAGES = ["deu", "spa"]
XQUAD_R_LANGUAGES = ["en", "de", "es", "ru", "zh"]
# Tatoeba names Mandarin "cmn"; the parallel data calls it "zho".
TATOEBA_FILE_CODE = {"zho": "cmn"}
# The XQuAD-R languages but English as Tatoeba names them, for the language-ID probe.
PROBE_LANGUAGES = ["deu", "spa", "rus", "cmn"]

# The recipe, chosen on the development runs (docs/results.md): same-paragraph hard negatives and
# both-sides semantic negatives beat ir_sem, and lr 1e-4 beat 5e-5 on them; the language loss
# did not beat IR + semantic beyond the seed spread, so it is off.
RECIPE = "ir_sem_bs_hn"

VARIANTS = {  # name -> (semantic weight, language weight, stop-gradient through pairs)
    "ir": (0.0, 0.0, False),
    "ir_sem": (1.0, 0.0, False),
    **{f"lang_{w}{sg}": (1.0, float(w), bool(sg)) for w in ("0.1", "0.3", "1")
       for sg in ("", "_sg")},
}


def tatoeba_spec(data_dir: pathlib.Path, lang: str) -> str:
  """"xxx:PATH,eng:PATH" for one Tatoeba language (named by the parallel data's code)."""
  code = TATOEBA_FILE_CODE.get(lang, lang)
  prefix = data_dir / "tatoeba" / f"tatoeba.{code}-eng"
  return f"{lang}:{prefix}.{code},eng:{prefix}.eng"


def get_config(arg=None):
  name = arg or RECIPE
  lowres = name == "lowres"
  if lowres:
    name = RECIPE
  # Suffixes (in this order when both): _bs, the semantic term's negatives from both sides;
  # _hn, one hard negative per question (another sentence of its paragraph).
  hard_negatives = name.endswith("_hn")
  name = name.removesuffix("_hn")
  both_sides = name.endswith("_bs")
  name = name.removesuffix("_bs")
  if name not in VARIANTS:
    raise ValueError(f"configs/e5_language_agnostic.py:{arg}: expected one of "
                     f"{sorted(VARIANTS) + ['lowres']}, optionally with '_bs', '_hn'")
  semantic, language, stop_pairs = VARIANTS[name]
  c = configs.default_config()
  c.seed = 0

  c.model.hf_path = E5_SMALL
  c.model.pooling = "mean"
  c.model.normalize = True
  c.model.query_prefix = "query: "
  c.model.passage_prefix = "passage: "
  c.model.freeze_embeddings = True

  parallel = LOW_RESOURCE_LANGUAGES if lowres else PARALLEL_LANGUAGES
  c.data.languages = ["eng"] + PARALLEL_LANGUAGES
  c.data.ir.format = "squad"
  c.data.ir.paths = [str(SHARED / "squad" / "dev-v1.1.minus_xquad_paragraphs.json")]
  c.data.ir.squad_target = "sentence"
  c.data.ir.num_negatives = 1 if hard_negatives else 0
  c.data.parallel.format = "tsv"
  c.data.parallel.paths = [str(SHARED / "parallel" / f"en-{l}.tsv") for l in parallel]
  # At most 4,000 pairs per language: deu (56k) would otherwise fill a quarter of every batch.
  c.data.parallel.max_pairs_per_language = 4000
  c.data.max_query_len = 32
  c.data.max_passage_len = 64
  c.data.max_sentence_len = 32
  # Training pads to 16, 32 or 64; the longer buckets serve evaluation (eval.max_len).
  c.data.length_buckets = [16, 32, 64, 128, 256, 512]

  c.loss.tau = 0.05
  c.loss.ir_weight = 1.0
  c.loss.semantic_weight = semantic
  c.loss.semantic_negatives = "both_sides" if both_sides else "other_side"
  c.loss.language_weight = language
  c.loss.language_stop_pairs = stop_pairs
  if language:
    # z: non-parallel sentences of every language, held out of the parallel data.
    c.loss.language_inputs = "mono"
    c.data.mono.from_parallel = 1000

  # 64 beat 32 in both seeds, by twice the range of 32's seeds (docs/results.md, fifth round),
  # at twice the step time.
  c.train.batch_size = 64
  c.train.parallel_batch_size = 64
  c.train.mono_batch_size = 32
  c.train.steps = 200
  # 1e-4 beat 5e-5 on the recipe by about twice the seed spread (docs/results.md, second round);
  # the first round's runs on that page ran at 5e-5 (--config.train.learning_rate=5e-5).
  c.train.learning_rate = 1e-4
  c.train.warmup_steps = 20
  c.train.decay = "linear"
  c.train.log_every = 20
  c.train.checkpoint_every = 100
  c.train.keep_checkpoints = 1

  c.eval.sets = [
      {"name": "xquad-r", "kind": "lareqa",
       "paths": [str(SHARED / "xquad-r" / f"{l}.json") for l in XQUAD_R_LANGUAGES]},
      {"name": "langid", "kind": "langid", "max_per_language": 400,
       "paths": [f"eng:{SHARED / 'tatoeba' / 'tatoeba.deu-eng.eng'}"]
                + [str(SHARED / "tatoeba" / f"tatoeba.{code}-eng") for code in PROBE_LANGUAGES]},
  ]
  c.eval.search = "exact"
  c.eval.batch_size = 64
  # Evaluate whole texts, as the HF export serves them: 9-17% of XQuAD-R's sentences are over
  # the 64 training tokens (docs/results.md, ninth round).
  c.eval.max_len = 512
  return c
