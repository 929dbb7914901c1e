"""Evaluators and `python -m lair.evaluate`, against references written here.

* XQuAD-R (a slice) and Tatoeba through the CLI with multilingual-e5-small, against a second
  code path: the pool and relevant sets parsed from the raw JSON as LAReQA's code does,
  PyTorch (transformers) embeddings, brute-force NumPy ranking and LAReQA's AP@k loop.
* BEIR plumbing against pytrec_eval on synthetic folders.
* The sharded encoder on 8 simulated devices against one-text-at-a-time embedding.
"""
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest

from lair import configs
from lair import inference
from lair.evaluate import evaluators
from lair.evaluate import run
from lair.evaluate import search

REPO = pathlib.Path(__file__).resolve().parents[1]
XQUAD_LANGUAGES = ("en", "de")
MAX_QUESTIONS = 60  # The first 60 question ids (about 12 paragraphs) in both languages.
TATOEBA_PAIRS = 50


# ------------------------------------------------------------------------------------------------
# The reference: LAReQA's evaluation written out independently (lareqa / XTREME-R semantics).
# ------------------------------------------------------------------------------------------------


def reference_lareqa_pool(paths, max_questions):
  """(questions [(text, lang)], candidates [text], relevant [set]) straight from the JSON.

  Candidates are every sentence (context[start:end] of sentence_breaks) of the paragraphs that
  hold a kept question; a question's relevant set is the sentence containing its answer_start
  in every language, matched by question id.
  """
  files = [json.loads(pathlib.Path(p).read_text(encoding="utf-8")) for p in paths]
  first_ids = [qa["id"] for a in files[0]["data"] for p in a["paragraphs"] for qa in p["qas"]]
  keep = set(first_ids[:max_questions])
  questions, candidates, answers = [], [], {}
  for path, data in zip(paths, files):
    lang = pathlib.Path(path).stem
    for article in data["data"]:
      for paragraph in article["paragraphs"]:
        kept = [qa for qa in paragraph["qas"] if qa["id"] in keep]
        if not kept:
          continue
        breaks = paragraph["sentence_breaks"]
        base = len(candidates)
        candidates += [paragraph["context"][s:e] for s, e in breaks]
        for qa in kept:
          start = qa["answers"][0]["answer_start"]
          (index,) = [i for i, (s, e) in enumerate(breaks) if s <= start < e]
          answers.setdefault(qa["id"], set()).add(base + index)
          questions.append((qa["question"], lang, qa["id"]))
  return questions, candidates, [answers[qid] for _, _, qid in questions]


def lareqa_average_precision(relevant, ranked, k):
  """LAReQA's AP@k from the 1-based ranks r_1 < r_2 < ... of the relevant candidates in the
  top k: sum_i i / r_i, divided by min(|relevant|, k)."""
  ranks = [r + 1 for r, doc in enumerate(ranked[:k]) if doc in relevant]
  return sum(i / r for i, r in enumerate(ranks, start=1)) / min(len(relevant), k)


def torch_embed(model_dir, texts, max_len, batch=64):
  """multilingual-e5 embeddings the PyTorch way: masked mean of the last layer, L2-normalised."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
  model = transformers.AutoModel.from_pretrained(str(model_dir)).eval()
  out = []
  with torch.inference_mode():
    for start in range(0, len(texts), batch):
      inputs = tokenizer(texts[start:start + batch], padding=True, truncation=True,
                         max_length=max_len, return_tensors="pt")
      hidden = model(**inputs).last_hidden_state
      mask = inputs["attention_mask"][..., None].float()
      pooled = (hidden * mask).sum(1) / mask.sum(1)
      out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
  return np.concatenate(out)


def run_cli(args, workdir):
  """`python -m lair.evaluate ARGS --workdir=WORKDIR` -> the metrics it wrote."""
  env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, "-m", "lair.evaluate", *args, f"--workdir={workdir}"],
                        capture_output=True, text=True, env=env, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "xquad-r" in proc.stdout and "map@20" in proc.stdout  # The table.
  return json.loads((pathlib.Path(workdir) / "eval" / "eval.json").read_text())["metrics"]


@pytest.fixture(scope="module")
def e5_cli_args(shared_data, e5_small_dir):
  xquad = [str(shared_data / "xquad-r" / f"{lang}.json") for lang in XQUAD_LANGUAGES]
  return [f"--hf={e5_small_dir}", "--config.model.query_prefix=query: ",
          "--config.model.passage_prefix=passage: ", f"--lareqa={','.join(xquad)}",
          f"--max_questions={MAX_QUESTIONS}",
          f"--tatoeba={shared_data / 'tatoeba' / 'tatoeba.deu-eng'}",
          f"--max_pairs={TATOEBA_PAIRS}"]


def test_xquad_r_and_tatoeba_through_the_cli_match_a_pytorch_numpy_reference(
    e5_cli_args, shared_data, e5_small_dir, tmp_path):
  exact = run_cli(e5_cli_args + ["--config.eval.search=exact"], tmp_path)

  # XQuAD-R: mAP@20 per question language and their mean. Lengths: the config defaults
  # (data.max_query_len = 64, data.max_passage_len = 128).
  paths = [shared_data / "xquad-r" / f"{lang}.json" for lang in XQUAD_LANGUAGES]
  questions, candidates, relevant = reference_lareqa_pool(paths, MAX_QUESTIONS)
  q = torch_embed(e5_small_dir, ["query: " + text for text, _, _ in questions], 64)
  c = torch_embed(e5_small_dir, ["passage: " + text for text in candidates], 128)
  ranked = np.argsort(-(q @ c.T), axis=1)
  ap = np.array([lareqa_average_precision(rel, list(row), 20)
                 for rel, row in zip(relevant, ranked)])
  langs = np.array([lang for _, lang, _ in questions])
  want = {lang: ap[langs == lang].mean() for lang in XQUAD_LANGUAGES}
  want_mean = np.mean(list(want.values()))
  for lang in XQUAD_LANGUAGES:
    assert exact[f"xquad-r/map@20/{lang}"] == pytest.approx(want[lang], abs=1e-4)
  assert exact["xquad-r/map@20/mean"] == pytest.approx(want_mean, abs=1e-4)
  assert 0.5 < want_mean < 1.0  # A real model on a real task, not a degenerate pool.

  # The ScaNN path (config.eval.search = "scann", default settings) through the LAReQA
  # evaluator, fed the reference embeddings: within 0.01 of exact search.
  # (Looked up by whitespace-normalised text: the reader cleans the questions' whitespace.)
  norm = lambda text: " ".join(text.split())
  vectors = {"q": {norm(t): v for (t, _, _), v in zip(questions, q)},
             "c": {norm(t): v for t, v in zip(candidates, c)}}
  lookup = lambda side: lambda texts: np.stack([vectors[side][norm(t)] for t in texts])
  encoders = evaluators.Encoders(query=lookup("q"), passage=lookup("c"), sentence=lookup("q"))
  config = configs.default_config()
  config.eval.search = "scann"
  spec = dict(name="xquad-r", kind="lareqa", paths=[str(p) for p in paths],
              max_questions=MAX_QUESTIONS, metrics=["map@20"])
  scann = evaluators.evaluate_lareqa(spec, encoders, run.make_searcher(config), top_k=20)
  for lang in XQUAD_LANGUAGES + ("mean",):
    want_value = want_mean if lang == "mean" else want[lang]
    assert abs(scann[f"xquad-r/map@20/{lang}"] - want_value) <= 0.01

  # Tatoeba deu<->eng: top-1 accuracy both ways, both sides with the query prefix.
  tatoeba = shared_data / "tatoeba" / "tatoeba.deu-eng"
  deu = (tatoeba.parent / (tatoeba.name + ".deu")).read_text("utf-8").splitlines()[:TATOEBA_PAIRS]
  eng = (tatoeba.parent / (tatoeba.name + ".eng")).read_text("utf-8").splitlines()[:TATOEBA_PAIRS]
  x = torch_embed(e5_small_dir, ["query: " + s for s in deu], 64)
  y = torch_embed(e5_small_dir, ["query: " + s for s in eng], 64)
  gold = np.arange(TATOEBA_PAIRS)
  x2y, y2x = np.mean((x @ y.T).argmax(1) == gold), np.mean((y @ x.T).argmax(1) == gold)
  assert exact["tatoeba/acc_x2y/deu"] == pytest.approx(x2y, abs=1e-6)
  assert exact["tatoeba/acc_y2x/deu"] == pytest.approx(y2x, abs=1e-6)
  assert exact["tatoeba/acc/mean"] == pytest.approx((x2y + y2x) / 2, abs=1e-6)


# ------------------------------------------------------------------------------------------------
# BEIR, against pytrec_eval.
# ------------------------------------------------------------------------------------------------


def _write_beir(folder, seed):
  """A random BEIR folder: 40 documents, 12 queries with graded qrels; returns the qrels."""
  rng = np.random.default_rng(seed)
  (folder / "qrels").mkdir(parents=True)
  docs = {f"d{i}": {"_id": f"d{i}", "title": f"title {seed} {i}", "text": f"text {i}"}
          for i in range(40)}
  queries = {f"q{i}": {"_id": f"q{i}", "text": f"query {seed} {i}"} for i in range(12)}
  (folder / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs.values()))
  (folder / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries.values()))
  qrels = {qid: {f"d{d}": int(rng.integers(1, 3))
                 for d in rng.choice(40, size=int(rng.integers(1, 6)), replace=False)}
           for qid in queries}
  lines = ["query-id\tcorpus-id\tscore"] + [
      f"{qid}\t{d}\t{g}" for qid, rel in qrels.items() for d, g in rel.items()]
  (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
  return qrels, docs, queries


def _hash_embed(texts):
  """A deterministic stand-in encoder: a random unit vector seeded by each text."""
  out = np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=16) for t in texts])
  return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def test_beir_metrics_match_pytrec_eval(tmp_path):
  pytrec_eval = pytest.importorskip("pytrec_eval")
  folders = {"alpha": 1, "beta": 2}
  encoders = evaluators.Encoders(query=_hash_embed, passage=_hash_embed, sentence=_hash_embed)
  spec = dict(name="toy", kind="beir", paths=[str(tmp_path / f) for f in folders])
  want = {}
  for name, seed in folders.items():
    qrels, docs, queries = _write_beir(tmp_path / name, seed)
    doc_ids = list(docs)
    d = _hash_embed([f"{docs[i]['title']} {docs[i]['text']}" for i in doc_ids])
    q = _hash_embed([queries[qid]["text"] for qid in qrels])
    scores = q @ d.T
    run = {qid: {doc_ids[j]: float(scores[i, j]) for j in range(len(doc_ids))}
           for i, qid in enumerate(qrels)}
    trec = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recip_rank"}).evaluate(run)
    # MRR@10 is recip_rank on the top-10 run; recall@100 over a 40-document corpus is 1.
    top10 = {qid: dict(sorted(r.items(), key=lambda kv: -kv[1])[:10]) for qid, r in run.items()}
    mrr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    want[name] = {"ndcg@10": np.mean([v["ndcg_cut_10"] for v in trec.values()]),
                  "mrr@10": np.mean([v["recip_rank"] for v in mrr.values()]),
                  "recall@100": 1.0}
  got = evaluators.evaluate_beir(spec, encoders, search.exact_search, top_k=20)
  for name in folders:
    for metric, value in want[name].items():
      assert got[f"toy/{metric}/{name}"] == pytest.approx(value, abs=1e-6)
  assert got["toy/ndcg@10/mean"] == pytest.approx(
      np.mean([want[n]["ndcg@10"] for n in folders]), abs=1e-6)
  one = evaluators.evaluate_beir(dict(spec, languages=["beta"]), encoders, search.exact_search,
                                 top_k=20)
  assert one["toy/ndcg@10/mean"] == pytest.approx(want["beta"]["ndcg@10"], abs=1e-6)
  assert not any(key.endswith("/alpha") for key in one)


def test_set_errors_name_the_entry_and_field(tmp_path):
  with pytest.raises(ValueError, match="'xq'.*kind"):
    evaluators.check_set(dict(name="xq", kind="squad", paths=["a"]))
  with pytest.raises(ValueError, match="'xq'.*missing 'paths'"):
    evaluators.check_set(dict(name="xq", kind="lareqa"))
  # Checked before any text is embedded (in training: before the first step), not at the end.
  for name in ("en.json", "de.json", "t.deu-eng.deu", "t.deu-eng.eng"):
    (tmp_path / name).write_text("")
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "de.json").write_text("")
  lareqa = dict(name="xq", kind="lareqa", paths=[str(tmp_path / "en.json"),
                                                 str(tmp_path / "de.json")])
  tatoeba = dict(name="tat", kind="tatoeba", paths=[str(tmp_path / "t.deu-eng")])
  assert evaluators.set_errors(lareqa) == evaluators.set_errors(tatoeba) == []
  assert evaluators.set_errors(dict(lareqa, metrics=["ndcg10", "map@20", "mrr@0"])) == [
      "config.eval.sets entry 'xq': metrics: ['ndcg10', 'mrr@0'] unknown for kind 'lareqa'; "
      "expected ['map', 'mrr', 'ndcg', 'recall'] followed by @k (k >= 1), e.g. 'ndcg@10'"]
  assert evaluators.set_errors(dict(tatoeba, metrics=["acc", "map@20"])) == [
      "config.eval.sets entry 'tat': metrics: ['map@20'] unknown for kind 'tatoeba'; "
      "expected some of ('acc_x2y', 'acc_y2x', 'acc')"]
  assert evaluators.set_errors(dict(tatoeba, languages=["de"])) == [
      "config.eval.sets entry 'tat': languages ['de'] are not in its paths (which give ['deu'])"]
  twice = dict(lareqa, paths=lareqa["paths"] + [str(tmp_path / "other" / "de.json")])
  assert evaluators.set_errors(twice) == [
      "config.eval.sets entry 'xq': paths give language(s) ['de'] more than once; expected one "
      "path per language (results are keyed by it)"]


def test_cli_languages_span_the_flag_sets(tmp_path):
  """--languages=de,deu with an XQuAD-R set (de, en) and a Tatoeba set (deu): each keeps its own
  code; a code no set gives is an error naming the flag."""
  from lair.evaluate import __main__ as evaluate_main  # pylint: disable=g-import-not-at-top
  for name in ("en.json", "de.json", "t.deu-eng.deu", "t.deu-eng.eng"):
    (tmp_path / name).write_text("")

  class Flags:
    lareqa = [str(tmp_path / "en.json"), str(tmp_path / "de.json")]
    tatoeba = [str(tmp_path / "t.deu-eng")]
    beir, max_len, max_questions, max_pairs = [], 0, 0, 0
    languages = ["de", "deu"]

  assert [s["languages"] for s in evaluate_main.flag_sets(Flags)] == [["de"], ["deu"]]
  Flags.languages = ["en"]
  assert [s["kind"] for s in evaluate_main.flag_sets(Flags)] == ["lareqa"]
  Flags.languages = ["en", "fra"]
  with pytest.raises(ValueError, match=r"--languages: \['fra'\] are in none of the flag sets, "
                                       r"whose languages are \['de', 'deu', 'en'\]"):
    evaluate_main.flag_sets(Flags)


# ------------------------------------------------------------------------------------------------
# The sharded encoder on 8 devices.
# ------------------------------------------------------------------------------------------------

def tiny_text_encoder_inputs():
  """(tokenizer, rcfg, params, texts): a 2-layer encoder over a word-level vocabulary, 21 texts."""
  import jax  # pylint: disable=g-import-not-at-top
  import tokenizers  # pylint: disable=g-import-not-at-top
  from tokenizers import models, pre_tokenizers, processors  # pylint: disable=g-import-not-at-top
  from lair.models import bert, retriever  # pylint: disable=g-import-not-at-top
  words = "the a cat dog sat on mat ran far away and then slept in sun".split()
  vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + words)}
  tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
  rcfg = retriever.RetrieverConfig(encoder=bert.EncoderConfig(
      vocab_size=len(vocab), hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64))
  params = retriever.init_retriever(rcfg, jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  texts = [" ".join(rng.choice(words, size=rng.integers(1, 30))) for _ in range(21)]
  return tok, rcfg, params, texts


_MULTI_DEVICE_CHECK = textwrap.dedent("""
    import jax, numpy as np
    from lair.evaluate import encode
    from lair.data import tokenize
    from lair.models import retriever
    from test_evaluate import tiny_text_encoder_inputs
    assert jax.device_count() == 8
    tok, rcfg, params, texts = tiny_text_encoder_inputs()
    got = encode.make_text_encoder(params, rcfg, tok, batch_size=5, max_len=24,
                                   buckets=(8, 16))(texts)
    for i, text in enumerate(texts):  # One text at a time, unpadded, on one device.
      ids = np.array([tokenize.tokenize(tok, [text], 24)[0]], np.int32)
      want = retriever.embed(params, ids, np.ones_like(ids), rcfg=rcfg)
      np.testing.assert_allclose(got[i], np.asarray(want)[0], atol=2e-5)
    print("OK", got.shape)
""")


def test_encoder_sharded_over_8_devices_matches_one_text_at_a_time():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests"),
                                         os.environ.get("PYTHONPATH", "")]))
  proc = subprocess.run([sys.executable, "-c", _MULTI_DEVICE_CHECK], capture_output=True,
                        text=True, env=env, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "OK (21, 32)" in proc.stdout


@pytest.mark.parametrize("eval_max_len, set_max_len, expected", [
    (0, 0, {"query": 6, "passage": 10, "sentence": 8}),  # The training cut-offs.
    (20, 0, {"query": 20, "passage": 20, "sentence": 20}),  # eval.max_len: every text.
    (20, 12, {"query": 12, "passage": 12, "sentence": 12}),  # The set's own max_len wins.
])
def test_evaluation_cuts_texts_at_eval_max_len(eval_max_len, set_max_len, expected):
  """Each encoder of a set embeds its texts cut at the expected number of tokens: compared
  with one text at a time cut there by hand, unpadded."""
  from lair.data import tokenize  # pylint: disable=g-import-not-at-top
  from lair.models import retriever  # pylint: disable=g-import-not-at-top
  tok, rcfg, params, texts = tiny_text_encoder_inputs()
  config = configs.default_config()
  config.data.max_query_len, config.data.max_passage_len, config.data.max_sentence_len = 6, 10, 8
  config.data.length_buckets = [8, 16, 32]
  config.eval.max_len = eval_max_len
  spec = {"name": "s", "kind": "lareqa", "paths": ["unused"], "max_len": set_max_len}
  encoders = run.make_encoders(config, params, rcfg, tok, spec)
  for kind, cut in expected.items():
    got = getattr(encoders, kind)(texts)
    for i, text in enumerate(texts):
      ids = np.array([tokenize.tokenize(tok, [text], cut)[0]], np.int32)
      want = retriever.embed(params, ids, np.ones_like(ids), rcfg=rcfg)
      np.testing.assert_allclose(got[i], np.asarray(want)[0], atol=2e-5, err_msg=kind)
  if not set_max_len:  # A run loaded for use (api.load_retriever) cuts where evaluation does.
    settings = inference._settings(config)  # pylint: disable=protected-access
    assert (settings["max_query_len"], settings["max_passage_len"]) == (
        expected["query"], expected["passage"])


def test_a_negative_eval_max_len_is_a_config_error_naming_the_key():
  config = configs.default_config()
  config.eval.max_len = -1
  assert evaluators.config_errors(config.eval) == [
      "config.eval.max_len=-1: expected 0 (the training cut-offs) or a positive number of tokens"]


def test_progress_lines_off_a_terminal_count_the_texts(monkeypatch, capsys):
  """Off a terminal (a log file) the encoder prints "encoded N / total" lines; N must be the
  texts embedded so far, not the count of a disabled progress bar (which stays 0)."""
  from lair.evaluate import encode  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(encode, "_LOG_EVERY_S", -1.0)  # A line after every batch.
  monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
  tok, rcfg, params, texts = tiny_text_encoder_inputs()
  encode.make_text_encoder(params, rcfg, tok, batch_size=5, max_len=24, buckets=(8, 16))(texts)
  counts = [int(line.split()[1]) for line in capsys.readouterr().out.splitlines()
            if line.strip().startswith("encoded ")]
  assert counts == [5, 10, 15, 20, 21], counts  # Batches of 5 over 21 texts.


# ------------------------------------------------------------------------------------------------
# --workdir: a training run's checkpoint, restored.
# ------------------------------------------------------------------------------------------------


def test_cli_restores_a_training_run_and_reproduces_its_evaluation(tmp_path):
  """The trainer evaluates its in-memory params at the last step; the CLI restores them from
  the orbax checkpoint and must score the same."""
  if not (REPO / "configs" / "quickstart.py").exists():
    pytest.skip("configs/quickstart.py (the quickstart run) is not in this checkout")
  env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  common = ["--config=configs/quickstart.py", f"--workdir={tmp_path}",
            "--config.eval.search=exact"]
  train = subprocess.run(
      [sys.executable, "-m", "lair.train", *common, "--config.train.steps=2",
       "--config.train.checkpoint_every=2", "--config.train.warmup_steps=1"],
      capture_output=True, text=True, env=env, cwd=REPO)
  assert train.returncode == 0, train.stderr[-3000:]
  trainers = (tmp_path / "eval" / "step_2.json").read_bytes()
  during_training = json.loads(trainers)
  proc = subprocess.run([sys.executable, "-m", "lair.evaluate", f"--workdir={tmp_path}",
                         "--config.eval.search=exact"],
                        capture_output=True, text=True, env=env, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # Its own file: the trainer's record (which a resume reads) is left as training wrote it.
  assert (tmp_path / "eval" / "step_2.json").read_bytes() == trainers
  restored = json.loads((tmp_path / "eval" / "evaluate_step_2.json").read_text())
  assert restored["step"] == 2 and "lareqa/map@20/mean" in restored["metrics"]
  assert restored["metrics"].keys() == during_training["metrics"].keys()
  for key, value in during_training["metrics"].items():
    assert restored["metrics"][key] == pytest.approx(value, abs=1e-6), key


def test_tatoeba_pairs_with_one_source_language_are_an_error(tmp_path):
  for name, text in (("t.deu-eng.deu", "a\n"), ("t.deu-eng.eng", "b\n"),
                     ("t.deu-fra.deu", "c\n"), ("t.deu-fra.fra", "d\n")):
    (tmp_path / name).write_text(text, encoding="utf-8")
  spec = dict(name="tat", kind="tatoeba",
              paths=[str(tmp_path / "t.deu-eng"), str(tmp_path / "t.deu-fra")])
  with pytest.raises(ValueError, match=r"'tat'.*t\.deu-eng.*t\.deu-fra.*'deu'"):
    evaluators.load_tatoeba(spec)
