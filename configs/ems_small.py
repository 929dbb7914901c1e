"""EMS (Mao et al. 2023) at small scale: a 4-layer x 256 BERT from scratch on parallel pairs only.

EMS at small scale (docs/results.md). `get_config(ARG)`:

    xtr_cl   cross-lingual token reconstruction (XTR) + EMS's sentence contrastive loss
    cl       the sentence contrastive loss only

    python -m lair.train --config=configs/ems_small.py:xtr_cl --workdir=runs/ablation/ems_xtr_cl

The tokenizer (WordPiece, 16k pieces) is trained on the fly from the 11 English<->X parallel
TSVs in ../shared/data/parallel/ (config.data.parallel.paths: shared locations as examples).
Training reads at most 4,000 pairs per language (so that deu's 56k do not drown tha's 0.7k).
Evaluation: Tatoeba (first 1,000 pairs, both directions) for the 11 parallel-data languages.
Sentence embeddings are the mean-pooled, L2-normalised encoder output, as EMS uses for retrieval;
the XTR head and the 128-d projection exist only in training (params["objectives"]).
"""
import pathlib

from lair import configs

# The data locations, language lists and Tatoeba paths are the e5 recipe's (one place).
E5_ABLATION = configs.import_config_file(
    str(pathlib.Path(__file__).with_name("e5_language_agnostic.py")))
SHARED = E5_ABLATION.SHARED
PARALLEL_LANGUAGES = E5_ABLATION.PARALLEL_LANGUAGES

# name -> (xtr_weight, ems_contrastive_weight): L = L_XTR + 2 L_CL, EMS's default
# (sentence_alignment_loss_weight = 2 in Mao-KU/EMS config.py).
RUNS = {"xtr_cl": (1., 2.), "cl": (0., 2.)}


def get_config(arg="xtr_cl"):
  if arg not in RUNS:
    raise ValueError(f"configs/ems_small.py:{arg}: expected one of {sorted(RUNS)}")
  xtr_weight, contrastive_weight = RUNS[arg]
  c = configs.default_config()
  c.seed = 0

  c.model.hf_path = ""
  c.model.encoder.update(dict(
      model_type="bert", hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024,
      max_position_embeddings=128, hidden_dropout=0.1, attention_dropout=0.1))
  c.model.pooling = "mean"
  c.model.normalize = True

  c.data.languages = ["eng"] + PARALLEL_LANGUAGES
  c.data.parallel.format = "tsv"
  c.data.parallel.paths = [str(SHARED / "parallel" / f"en-{l}.tsv") for l in PARALLEL_LANGUAGES]
  c.data.parallel.max_pairs_per_language = 4000
  c.data.max_sentence_len = 32
  c.data.max_query_len = 32
  c.data.length_buckets = [16, 32]
  c.tokenizer.train_files = list(c.data.parallel.paths)
  c.tokenizer.vocab_size = 16000

  c.loss.ir_weight = 0.
  c.loss.xtr_weight = xtr_weight
  c.loss.ems_contrastive_weight = contrastive_weight
  c.loss.ems_tau = 0.1

  c.train.parallel_batch_size = 64
  c.train.steps = 1000
  c.train.learning_rate = 5e-4
  c.train.warmup_steps = 100
  c.train.decay = "linear"
  c.train.weight_decay = 0.01
  c.train.log_every = 50
  c.train.checkpoint_every = 250
  c.train.keep_checkpoints = 1

  c.eval.sets = [{"name": "tatoeba", "kind": "tatoeba",
                  "paths": [E5_ABLATION.tatoeba_spec(SHARED, l) for l in PARALLEL_LANGUAGES]}]
  c.eval.search = "exact"
  c.eval.batch_size = 128
  return c
