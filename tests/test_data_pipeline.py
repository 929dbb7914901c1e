"""TrainBatches: bucket shapes, tokens, determinism, host sharding, resuming, stream selection."""
import json
import pathlib

import numpy as np
import pytest
import tokenizers
from tokenizers import models as tok_models
from tokenizers import pre_tokenizers
import transformers

import functools

import jax
from jax.extend import core as jax_core

from lair import configs
from lair import objectives
from lair.data import pipeline
from lair.models import ems
from lair.train import step as step_lib

LANGS = ["eng", "deu", "spa"]
BUCKETS = [4, 8, 16]


def _words(n: int, tag: str) -> str:
  return " ".join(f"{tag}{i}" for i in range(n))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
  root = tmp_path_factory.mktemp("pipeline")
  # Rows of varied length (2..13 words) so several buckets appear.
  triples = "".join(f"{_words(1 + i % 5, f'q{i}_')}\t{_words(2 + i % 11, f'p{i}_')}\t"
                    f"{_words(1 + i % 3, f'n{i}_')}\n" for i in range(24))
  par_de = "source\teng\tdeu\n" + "".join(
      f"s\t{_words(1 + i % 7, f'e{i}_')}\t{_words(2 + i % 5, f'd{i}_')}\n" for i in range(12))
  par_es = "source\teng\tspa\n" + "".join(
      f"s\t{_words(1 + i % 4, f'E{i}_')}\t{_words(1 + i % 9, f's{i}_')}\n" for i in range(8))
  paths = {"triples": root / "t.tsv", "de": root / "en-deu.tsv", "es": root / "en-spa.tsv",
           "mono_de": root / "de.txt", "mono_es": root / "es.txt"}
  paths["triples"].write_text(triples)
  paths["de"].write_text(par_de)
  paths["es"].write_text(par_es)
  paths["mono_de"].write_text("".join(f"{_words(1 + i % 6, f'm{i}_')}\n" for i in range(10)))
  paths["mono_es"].write_text("".join(f"{_words(3, f'o{i}_')}\n" for i in range(6)))
  return {k: str(v) for k, v in paths.items()}


@pytest.fixture(scope="module")
def tokenizer(files):
  """A whitespace WordLevel tokenizer knowing every fixture word: one token per word."""
  words = sorted({w for path in files.values() for w in pathlib.Path(path).read_text().split()})
  vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "query", "passage", ":"] + words)}
  model = tokenizers.Tokenizer(tok_models.WordLevel(vocab, unk_token="[UNK]"))
  model.pre_tokenizer = pre_tokenizers.Whitespace()
  return transformers.PreTrainedTokenizerFast(tokenizer_object=model, pad_token="[PAD]",
                                              unk_token="[UNK]")


def _row_tags(tokenizer, ids, position: int) -> list[str]:
  """The word at `position` of each row of ids [N, L]: it names the fixture row ("p7_0")."""
  return [tokenizer.convert_ids_to_tokens(int(row[position])) for row in ids]


def _config(files, **loss):
  c = configs.default_config()
  c.data.languages = list(LANGS)
  c.data.ir.update(dict(format="triples", paths=[files["triples"]], num_negatives=1))
  c.data.parallel.paths = [files["de"], files["es"]]
  c.data.mono.paths = [f"deu:{files['mono_de']}", f"spa:{files['mono_es']}"]
  c.data.length_buckets = list(BUCKETS)
  c.data.max_query_len, c.data.max_passage_len, c.data.max_sentence_len = 6, 12, 16
  c.model.query_prefix, c.model.passage_prefix = "query: ", "passage: "
  c.train.batch_size, c.train.parallel_batch_size, c.train.mono_batch_size = 8, 4, 4
  c.loss.update(dict(ir_weight=1.0, semantic_weight=1.0, language_weight=1.0))
  c.loss.update(loss)
  return c


def _batches(config, tokenizer, tmp_path, n, **kwargs):
  kwargs.setdefault("seed", 3)
  it = pipeline.TrainBatches(config, tokenizer, cache_dir=str(tmp_path), **kwargs)
  return [next(it) for _ in range(n)]


def _assert_equal(a: dict, b: dict):
  assert a.keys() == b.keys()
  for stream in a:
    assert a[stream].keys() == b[stream].keys()
    for key in a[stream]:
      np.testing.assert_array_equal(a[stream][key], b[stream][key], err_msg=f"{stream}/{key}")


def _token_count(text: str) -> int:
  # The fixture's words are single tokens; "query: " / "passage: " add two ("word", ":").
  return len(text.split()) + text.count(":")


def test_batch_structure_and_bucket_shapes(files, tokenizer, tmp_path):
  config = _config(files)
  lines = pathlib.Path(files["triples"]).read_text().splitlines()
  queries = {_token_count("query: " + l.split("\t")[0]) for l in lines}
  for batch in _batches(config, tokenizer, tmp_path, 6):
    assert set(batch) == {"ir", "parallel", "mono"}
    ir, par, mono = batch["ir"], batch["parallel"], batch["mono"]
    assert ir["query_ids"].shape[0] == 8 and ir["negative_ids"].shape[:2] == (8, 1)
    assert par["src_ids"].shape[0] == par["tgt_ids"].shape[0] == 4
    assert mono["ids"].shape[0] == 4
    # Independent bucket rule: smallest of the buckets below max_len, or max_len, fitting all.
    for ids, mask, max_len in [
        (ir["query_ids"], ir["query_mask"], 6),
        (np.concatenate([ir["passage_ids"], ir["negative_ids"][:, 0]]),
         np.concatenate([ir["passage_mask"], ir["negative_mask"][:, 0]]), 12),
        (np.concatenate([par["src_ids"], par["tgt_ids"]]),
         np.concatenate([par["src_mask"], par["tgt_mask"]]), 16),
        (mono["ids"], mono["mask"], 16)]:
      allowed = [b for b in BUCKETS if b < max_len] + [max_len]
      longest = mask.sum(1).max()
      assert ids.shape[1] == min(b for b in allowed if b >= longest)
      assert ids.dtype == mask.dtype == np.int32
      # Tokens first, then padding with the pad id.
      np.testing.assert_array_equal(mask, np.arange(mask.shape[1]) < mask.sum(1, keepdims=True))
      assert (ids[mask == 0] == tokenizer.pad_token_id).all()
    # Truncated to max_query_len, else the query length with its prefix.
    assert set(ir["query_mask"].sum(1)) <= {min(n, 6) for n in queries}
    np.testing.assert_array_equal(ir["query_ids"][:, :2], [[2, 4]] * 8)  # "query", ":"
    np.testing.assert_array_equal(ir["passage_ids"][:, :2], [[3, 4]] * 8)  # "passage", ":"
    assert set(par["src_lang"]) == {0} and set(par["tgt_lang"]) <= {1, 2}
    assert set(mono["lang"]) <= {1, 2}


def test_each_epoch_visits_every_row_once_with_rows_kept_together(files, tokenizer, tmp_path):
  # 24 triples with batch 8: batches 0-2 are epoch 0, 3-5 epoch 1.
  config = _config(files)
  batches = _batches(config, tokenizer, tmp_path, 6)
  for epoch in (batches[:3], batches[3:]):
    seen = [t for b in epoch for t in _row_tags(tokenizer, b["ir"]["passage_ids"], 2)]
    assert sorted(seen) == sorted(f"p{i}_0" for i in range(24))
  assert batches[0]["ir"]["passage_ids"].tolist() != batches[3]["ir"]["passage_ids"].tolist()
  for b in batches:
    ir, par, mono = b["ir"], b["parallel"], b["mono"]
    rows = [t[1:] for t in _row_tags(tokenizer, ir["passage_ids"], 2)]
    assert [t[1:] for t in _row_tags(tokenizer, ir["query_ids"], 2)] == rows
    assert [t[1:] for t in _row_tags(tokenizer, ir["negative_ids"][:, 0], 2)] == rows
    src = _row_tags(tokenizer, par["src_ids"], 2)
    tgt = _row_tags(tokenizer, par["tgt_ids"], 2)
    assert [t[1:] for t in src] == [t[1:] for t in tgt]
    # English "e*" pairs with German "d*" (deu = 1), "E*" with Spanish "s*" (spa = 2).
    assert par["tgt_lang"].tolist() == [{"d": 1, "s": 2}[t[0]] for t in tgt]
    assert par["src_lang"].tolist() == [0] * len(src)
    assert mono["lang"].tolist() == [{"m": 1, "o": 2}[t[0]]
                                     for t in _row_tags(tokenizer, mono["ids"], 2)]


def test_deterministic_given_seed(files, tokenizer, tmp_path):
  config = _config(files)
  a = _batches(config, tokenizer, tmp_path, 4)
  b = _batches(config, tokenizer, tmp_path, 4)
  for x, y in zip(a, b):
    _assert_equal(x, y)
  c = _batches(config, tokenizer, tmp_path, 4, seed=4)
  assert any(not np.array_equal(x["ir"]["passage_mask"], y["ir"]["passage_mask"])
             for x, y in zip(a, c))


def test_host_slices_concatenate_to_the_global_batch(files, tokenizer, tmp_path):
  config = _config(files)
  whole = _batches(config, tokenizer, tmp_path, 5)
  hosts = [_batches(config, tokenizer, tmp_path, 5, process_index=h, process_count=2)
           for h in range(2)]
  for step in range(5):
    h0, h1 = hosts[0][step], hosts[1][step]
    assert h0["ir"]["query_ids"].shape[0] == 4 and h0["parallel"]["src_ids"].shape[0] == 2
    joined = {s: {k: np.concatenate([h0[s][k], h1[s][k]]) for k in h0[s]} for s in h0}
    _assert_equal(joined, whole[step])


def test_state_resumes_the_same_next_batch(files, tokenizer, tmp_path):
  config = _config(files)
  it = pipeline.TrainBatches(config, tokenizer, seed=5, cache_dir=str(tmp_path))
  for _ in range(4):  # Past an epoch boundary of the parallel (20 rows, batch 4) stream.
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  expected = [next(it) for _ in range(3)]
  resumed = pipeline.TrainBatches(config, tokenizer, seed=5, cache_dir=str(tmp_path))
  resumed.set_state(state)
  for want in expected:
    _assert_equal(next(resumed), want)
  other = pipeline.TrainBatches(config, tokenizer, seed=6, cache_dir=str(tmp_path))
  with pytest.raises(ValueError, match="seed"):
    other.set_state(state)


def test_streams_with_weight_zero_are_absent(files, tokenizer, tmp_path):
  only_ir = _config(files, semantic_weight=0.0, language_weight=0.0)
  it = pipeline.TrainBatches(only_ir, tokenizer, seed=0, cache_dir=str(tmp_path))
  assert set(next(it)) == {"ir"} and set(it.stats) == {"ir"}
  no_ir = _config(files, ir_weight=0.0, language_weight=0.0)
  assert set(next(pipeline.TrainBatches(no_ir, tokenizer, seed=0,
                                         cache_dir=str(tmp_path)))) == {"parallel"}
  none = _config(files, ir_weight=0.0, semantic_weight=0.0, language_weight=0.0)
  with pytest.raises(ValueError, match="every loss weight is 0"):
    pipeline.TrainBatches(none, tokenizer, seed=0, cache_dir=str(tmp_path))


WEIGHT_KEYS = ("ir_weight", "semantic_weight", "language_weight", "xtr_weight",
               "ems_contrastive_weight")


def _plan_cases():
  """Every combination of nonzero weights; with the language term, every language_inputs and
  with and without monolingual files."""
  for mask in range(1, 2 ** len(WEIGHT_KEYS)):
    weights = {k: float(mask >> i & 1) for i, k in enumerate(WEIGHT_KEYS)}
    if weights["language_weight"]:
      for inputs in objectives.LANGUAGE_INPUTS:
        for mono in (True, False):
          yield weights, inputs, mono
    else:
      yield weights, "ir+mono", True


def test_pipeline_reads_exactly_the_streams_the_step_embeds(files, tokenizer, tmp_path):
  """For every objective plan: the batch's streams are those of the inputs the step embeds,
  and the step's loss reads every embedded input (no stream read for nothing)."""
  batches = {}  # plan.streams -> the pipeline's first batch (one pipeline per stream set).
  checked = 0
  for weights, inputs, mono in _plan_cases():
    config = _config(files, language_inputs=inputs, **weights)
    if not mono:
      config.data.mono.paths = []
    try:
      plan = objectives.plan_objectives(config)
    except objectives.PlanError as e:  # z from a stream that has no data: said, not guessed.
      assert inputs == "mono" and not mono, e
      continue
    if plan.streams not in batches:
      pipe = pipeline.TrainBatches(config, tokenizer, seed=0, cache_dir=str(tmp_path), plan=plan)
      assert tuple(pipe.streams) == plan.streams
      batches[plan.streams] = next(pipe)
    batch = batches[plan.streams]
    embedded = step_lib.embedding_inputs(batch, plan)
    assert set(batch) == {objectives.INPUTS[n].stream for n in embedded}, (weights, inputs)
    assert tuple(embedded) == plan.inputs
    read = _inputs_the_loss_reads(plan, config, batch)
    assert read == set(plan.inputs), (weights, inputs, mono, read)
    checked += 1
  assert checked > 60


def _inputs_the_loss_reads(plan, config, batch) -> set:
  """The inputs whose embeddings the step's weighted loss depends on, from its jaxpr.

  objective_terms is traced (not compiled) under vmap over a 1-device `data` axis, which gives
  its collectives their axis; then a backward pass over the equations keeps what feeds "loss".
  """
  emb = {name: jax.ShapeDtypeStruct((1, ids.shape[0], 8), np.float32)
         for name, (ids, _, _) in step_lib.embedding_inputs(batch, plan).items()}
  heads = ems.init_heads(plan.weights, config.loss, jax.random.key(0), embedding_dim=8,
                         num_languages=len(LANGS), vocab_size=256)
  extras = jax.tree.map(lambda x: x[None], step_lib._extras(batch, plan))  # pylint: disable=protected-access
  terms = functools.partial(step_lib.objective_terms, plan=plan, loss_cfg=config.loss,
                            normalize=True, special_ids=())
  loss = jax.vmap(lambda e, x: terms(e, x, heads, jax.random.key(1))["loss"], axis_name="data")
  closed = jax.make_jaxpr(loss)(emb, extras)
  jaxpr = closed.jaxpr
  live = {v for v in jaxpr.outvars if isinstance(v, jax_core.Var)}
  for eqn in reversed(jaxpr.eqns):
    if any(v in live for v in eqn.outvars):
      live.update(v for v in eqn.invars if isinstance(v, jax_core.Var))
  # make_jaxpr's inputs are the flattened dict: its keys in sorted order.
  return {name for name, var in zip(sorted(emb), jaxpr.invars) if var in live}


def test_an_unknown_semantic_negatives_value_is_a_plan_error_naming_the_key():
  config = configs.default_config()
  config.loss.update(semantic_weight=1.0, semantic_negatives="all")
  config.data.parallel.paths = ["en-deu.tsv"]
  with pytest.raises(objectives.PlanError,
                     match=r"config.loss.semantic_negatives='all': expected one of"):
    objectives.plan_objectives(config)
