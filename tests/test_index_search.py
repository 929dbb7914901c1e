"""lair.index / lair.search / lair.mine on an exported HF folder, against independent references.

A small random retriever (a projection head and normalisation, so every sentence-transformers
module is exercised) is exported with `export_hf`; sentence-transformers embeds the same texts
from that folder and NumPy ranks them. The command lines run in this process (their `main`), as
`python -m lair.X` runs them, and once as a subprocess for the one-line errors.
"""
import io
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from lair import api
from lair import configs
from lair import export
from lair import index as index_lib
from lair import inference
from lair import mine as mine_lib
from lair import search as search_lib
from lair import tokenizer as lair_tokenizer
from lair.errors import ConfigError
from lair.models import bert
from lair.models import hf
from lair.models import retriever

REPO = pathlib.Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "lair" / "data" / "quickstart"
CORPUS = [f"deu:{QUICKSTART / 'tatoeba.deu-eng.deu'}", f"eng:{QUICKSTART / 'tatoeba.deu-eng.eng'}",
          f"fra:{QUICKSTART / 'tatoeba.fra-eng.fra'}"]
QUERIES = ["Wo wohnt Leon Novunt?", "Which pet does Ida Kalo keep?",
           "Quel est le métier de Hugo Selino ?"]


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory) -> str:
  root = tmp_path_factory.mktemp("tiny")
  tok = lair_tokenizer.train_tokenizer([str(QUICKSTART / f"mono.{l}.txt")
                                        for l in ("eng", "deu", "fra")], vocab_size=600)
  enc = bert.EncoderConfig(vocab_size=len(tok), hidden_size=32, num_layers=2, num_heads=2,
                           intermediate_size=64, max_position_embeddings=64,
                           hidden_dropout=0.0, attention_dropout=0.0)
  rcfg = retriever.RetrieverConfig(encoder=enc, pooling="mean", projection="linear",
                                   projection_dim=16, normalize=True)
  params = retriever.init_retriever(rcfg, jax.random.PRNGKey(3))
  out = root / "hf"
  hf.export_hf(params, rcfg, tok, str(out), prompts={"query": "query: ", "passage": "passage: "})
  return str(out)


@pytest.fixture(scope="module")
def reference(tiny_hf):
  """sentence-transformers embeddings of the corpus and the queries, with the folder's prompts."""
  from sentence_transformers import SentenceTransformer  # pylint: disable=g-import-not-at-top
  model = SentenceTransformer(tiny_hf, device="cpu")
  docs = []
  for spec in CORPUS:
    lang, path = spec.split(":", 1)
    name = os.path.basename(path)
    for n, line in enumerate(pathlib.Path(path).read_text(encoding="utf-8").splitlines(), 1):
      if line.strip():
        docs.append({"id": f"{name}:{n}", "text": line.strip(), "lang": lang})
  d = model.encode([x["text"] for x in docs], prompt_name="passage", batch_size=64)
  q = model.encode(QUERIES, prompt_name="query")
  return {"docs": docs, "doc_vectors": d, "query_vectors": q}


def _run(main, argv, capsys) -> str:
  main(argv)
  return capsys.readouterr().out


def _assert_same_ranking(ids, scores, ref_scores, ref_ids_by_index, k, atol=2e-5):
  """lair's top-k (ids, scores) equals NumPy's over the reference scores; a swap of two hits
  whose reference scores differ by less than float noise (`atol`) is allowed."""
  order = np.argsort(-ref_scores, kind="stable")[:k]
  want = [ref_ids_by_index[i] for i in order]
  np.testing.assert_allclose(scores, ref_scores[order], atol=atol)
  for rank, (got, expected) in enumerate(zip(ids, want)):
    if got != expected:
      gap = abs(ref_scores[order[rank]] - ref_scores[ref_ids_by_index.index(got)])
      assert gap < atol, (rank, got, expected, gap)


@pytest.fixture(scope="module")
def built(tiny_hf, tmp_path_factory):
  folder = tmp_path_factory.mktemp("idx") / "index"
  index_lib.main(["lair.index", f"--hf={tiny_hf}", f"--corpus={','.join(CORPUS)}",
                  f"--out={folder}"])
  return str(folder)


def test_index_and_search_agree_with_sentence_transformers(built, reference, capsys):
  info = json.loads(pathlib.Path(built, "index.json").read_text())
  docs = reference["docs"]
  assert info["num_docs"] == len(docs) == 600 and info["search"] == "exact"
  assert info["languages"] == {"deu": 200, "eng": 200, "fra": 200}
  assert info["model"]["query_prefix"] == "query: "  # The folder's prompts, applied.
  stored = [json.loads(l) for l in pathlib.Path(built, "docs.jsonl").read_text().splitlines()]
  assert stored == docs
  np.testing.assert_allclose(np.load(pathlib.Path(built, "embeddings.npy")),
                             reference["doc_vectors"], atol=2e-5)
  out = _run(search_lib.main, ["lair.search", f"--index={built}", "--k=8", "--format=jsonl",
                               *QUERIES], capsys)
  results = [json.loads(line) for line in out.splitlines()]
  assert [r["query"] for r in results] == QUERIES and [r["qid"] for r in results] == ["1", "2", "3"]
  ids = [d["id"] for d in docs]
  for r, q in zip(results, reference["query_vectors"]):
    hits = r["hits"]
    assert [h["rank"] for h in hits] == list(range(1, 9))
    _assert_same_ranking([h["id"] for h in hits], [h["score"] for h in hits],
                         reference["doc_vectors"] @ q, ids, 8)
    for h in hits:
      doc = docs[ids.index(h["id"])]
      assert (h["text"], h["lang"]) == (doc["text"], doc["lang"])


def test_a_reloaded_index_gives_the_same_results(built, tiny_hf):
  retriever_ = api.load_retriever(tiny_hf)
  docs = list(api.read_corpus(CORPUS))
  fresh = api.build_index(retriever_, docs)  # In memory, the same settings as the CLI.
  loaded = api.load_index(built)
  assert loaded.retriever.identity() == fresh.retriever.identity()
  assert [[h.as_dict() for h in hits] for hits in loaded.search(QUERIES, k=5)] == \
         [[h.as_dict() for h in hits] for hits in fresh.search(QUERIES, k=5)]


@pytest.mark.parametrize("eval_max_len, cut", [
    (0, 12),     # 0: data.max_passage_len, the training cut-off.
    (9, 9),      # eval.max_len wins over it.
    (512, 64)])  # Never past the position table (max_position_embeddings=64).
def test_a_loaded_retriever_cuts_passages_as_sentence_transformers_does_at_that_length(
    tiny_hf, eval_max_len, cut):
  from sentence_transformers import SentenceTransformer  # pylint: disable=g-import-not-at-top
  lines = (QUICKSTART / "tatoeba.deu-eng.eng").read_text(encoding="utf-8").splitlines()
  long_text = " ".join(lines[:12])  # Well over 64 tokens, so every cut-off bites.
  config = configs.default_config()
  config.data.max_passage_len = 12
  config.eval.max_len = eval_max_len
  got = api.load_retriever(tiny_hf, config=config).encode([long_text], kind="passage")
  model = SentenceTransformer(tiny_hf, device="cpu")
  model.max_seq_length = cut
  want = model.encode([long_text], prompt_name="passage")
  assert len(model.tokenize(["passage: " + long_text])["input_ids"][0]) == cut
  np.testing.assert_allclose(got, want, atol=2e-5)


def test_scann_index_is_saved_with_scann_and_reloads_identically(tiny_hf, tmp_path):
  folder = tmp_path / "scann_index"
  corpus = CORPUS + [f"{l}:{QUICKSTART / f'mono.{l}.txt'}" for l in ("eng", "deu", "fra")]
  # Above exact_below documents, "auto" (the default) builds a ScaNN searcher.
  built = api.build_index(api.load_retriever(tiny_hf), api.read_corpus(corpus), str(folder),
                          exact_below=2000)
  assert built.info["search"] == "scann" and len(built) > 2500
  assert (folder / "scann" / "scann_assets.pbtxt").exists()
  loaded = index_lib.load_index(str(folder))
  vectors = loaded.retriever.encode(QUERIES + [d["text"] for d in loaded.docs[::97]])
  scores, rows = loaded.search_vectors(vectors, 10)
  # The searcher read back from disk answers exactly as the one built in memory.
  fresh_scores, fresh_rows = built.search_vectors(vectors, 10)
  np.testing.assert_array_equal(rows, fresh_rows)
  np.testing.assert_array_equal(scores, fresh_scores)
  # ScaNN re-ranks exactly: its scores are the true inner products of the rows it returns.
  # (Its recall is tested on real embeddings in test_search.py; a random model's are too alike.)
  np.testing.assert_allclose(scores, np.take_along_axis(vectors @ loaded.embeddings.T, rows, 1),
                             atol=1e-4)


def test_search_output_formats(built, tmp_path, capsys, monkeypatch):
  table = _run(search_lib.main, ["lair.search", f"--index={built}", "--k=3", QUERIES[0]], capsys)
  lines = table.strip().splitlines()
  assert lines[0] == f"query 1: {QUERIES[0]}"
  assert lines[1].split() == ["rank", "score", "id", "lang", "text"]
  assert all(len(line) <= search_lib.WIDTH for line in lines)
  assert [line.split()[0] for line in lines[2:]] == ["1", "2", "3"]
  assert all(line.split()[3] in ("deu", "eng", "fra") for line in lines[2:])
  # Queries from a TSV file keep their ids; TREC run lines: qid Q0 docid rank score tag.
  queries = tmp_path / "queries.tsv"
  queries.write_text("".join(f"q{i}\t{q}\n" for i, q in enumerate(QUERIES)), encoding="utf-8")
  trec = _run(search_lib.main, ["lair.search", f"--index={built}", f"--queries={queries}",
                                "--k=4", "--format=trec", "--tag=tiny"], capsys)
  rows = [line.split() for line in trec.splitlines()]
  assert len(rows) == 12 and all(len(r) == 6 and r[1] == "Q0" and r[5] == "tiny" for r in rows)
  assert [r[0] for r in rows] == ["q0"] * 4 + ["q1"] * 4 + ["q2"] * 4
  assert [int(r[3]) for r in rows[:4]] == [1, 2, 3, 4]
  scores = [float(r[4]) for r in rows[:4]]
  assert scores == sorted(scores, reverse=True)
  # Stdin, one query per line, when no query is given.
  monkeypatch.setattr(sys, "stdin", io.StringIO(f"{QUERIES[1]}\n\n{QUERIES[2]}\n"))
  out = _run(search_lib.main, ["lair.search", f"--index={built}", "--k=2", "--format=jsonl"],
             capsys)
  assert [(r["qid"], r["query"]) for r in map(json.loads, out.splitlines())] == [
      ("1", QUERIES[1]), ("3", QUERIES[2])]


def test_mined_negatives_follow_the_ranking_without_positives(built, reference, tmp_path,
                                                             capsys):
  docs = reference["docs"]
  # Training rows whose positive is a corpus sentence; the negatives must be the next best
  # corpus sentences by the reference scores, positives and the top --skip_top left out.
  train = tmp_path / "train.jsonl"
  examples = [(q, [docs[i]["text"]]) for q, i in zip(QUERIES, (3, 250, 470))]
  train.write_text("".join(json.dumps({"query": q, "pos": p}) + "\n" for q, p in examples),
                   encoding="utf-8")
  out_path = tmp_path / "mined.jsonl"
  log = _run(mine_lib.main, ["lair.mine", f"--index={built}", f"--out={out_path}",
                             "--num_negatives=3", "--skip_top=2", "--config.data.ir.format=jsonl",
                             f"--config.data.ir.paths={train}"], capsys)
  assert "mined 3 negatives for 3 queries" in log
  mined = [json.loads(line) for line in out_path.read_text(encoding="utf-8").splitlines()]
  texts = [d["text"] for d in docs]
  for row, (query, positives), q in zip(mined, examples, reference["query_vectors"]):
    assert row["query"] == query and row["pos"] == positives
    ranked = [texts[i] for i in np.argsort(-(reference["doc_vectors"] @ q), kind="stable")]
    expected = list(dict.fromkeys(t for t in ranked if t not in positives))[2:5]
    assert row["neg"] == expected
  # The triples form of the same file, by its name.
  triples = tmp_path / "mined.tsv"
  _run(mine_lib.main, ["lair.mine", f"--index={built}", f"--out={triples}",
                       "--num_negatives=3", "--skip_top=2", "--config.data.ir.format=jsonl",
                       f"--config.data.ir.paths={train}"], capsys)
  lines = [l.split("\t") for l in triples.read_text(encoding="utf-8").splitlines()]
  assert [l[:2] for l in lines] == [[r["query"], r["pos"][0]] for r in mined]
  assert [l[2:] for l in lines] == [r["neg"] for r in mined]


def test_pick_negatives_rules():
  # The query, the positive and a repeat ("a  " is "a" with whitespace collapsed) are passed over.
  ranked = ["q", "pos", "a", " a  ", "b", "c", "p o s", "d"]
  assert mine_lib.pick_negatives("q", ["pos"], ranked, num_negatives=2) == ["a", "b"]
  assert mine_lib.pick_negatives("q", ["pos"], ranked, num_negatives=2, skip_top=1) == ["b", "c"]
  assert mine_lib.pick_negatives("q", ["pos"], ranked, num_negatives=9) == ["a", "b", "c",
                                                                           "p o s", "d"]


def test_errors_name_the_flag_or_file(built, tiny_hf, tmp_path):
  with pytest.raises(FileNotFoundError, match=r"--index=.*nowhere: no such folder"):
    search_lib.main(["lair.search", f"--index={tmp_path / 'nowhere'}", "q"])
  with pytest.raises(ConfigError, match=r"--out=.*an index is there already"):
    index_lib.main(["lair.index", f"--hf={tiny_hf}", f"--corpus={CORPUS[0]}", f"--out={built}"])
  not_an_index = tmp_path / "notes"
  not_an_index.mkdir()
  (not_an_index / "keep.txt").write_text("mine")
  with pytest.raises(ConfigError, match=r"holds no index.json"):
    index_lib.main(["lair.index", f"--hf={tiny_hf}", f"--corpus={CORPUS[0]}",
                    f"--out={not_an_index}", "--overwrite"])
  assert (not_an_index / "keep.txt").read_text() == "mine"
  with pytest.raises(ConfigError, match=r"--corpus is empty"):
    index_lib.main(["lair.index", f"--hf={tiny_hf}", f"--out={tmp_path / 'x'}"])
  with pytest.raises(FileNotFoundError, match=r"--corpus: .*missing.txt: no such file"):
    index_lib.main(["lair.index", f"--hf={tiny_hf}", f"--corpus={tmp_path / 'missing.txt'}",
                    f"--out={tmp_path / 'x'}"])
  with pytest.raises(ConfigError, match=r"no model: give --workdir"):
    index_lib.main(["lair.index", f"--corpus={CORPUS[0]}", f"--out={tmp_path / 'x'}"])
  # A mistyped --workdir is named as such, not as a config file the user never gave.
  for main, flags in ((index_lib.main, [f"--corpus={CORPUS[0]}", f"--out={tmp_path / 'x'}"]),
                      (search_lib.main, [f"--index={built}", "q"]),
                      (export.main, [f"--out={tmp_path / 'x'}"])):
    with pytest.raises(ConfigError, match=rf"--workdir=.*typo: no config.json there; expected "
                                          rf"the workdir of a `python -m lair.train` run"):
      main(["lair", f"--workdir={tmp_path / 'typo'}", *flags])
  with pytest.raises(ConfigError, match=r"--format"):
    search_lib.main(["lair.search", f"--index={built}", "--format=csv", "q"])
  with pytest.raises(ConfigError, match=r"--step=3 applies to --workdir runs"):
    inference.from_flags(_Flags(hf=tiny_hf, step="3", workdir=None), None)
  # An empty corpus file: one line naming it, no traceback, exit status 2.
  empty = tmp_path / "empty.txt"
  empty.write_text("\n")
  proc = subprocess.run([sys.executable, "-m", "lair.index", f"--hf={tiny_hf}",
                         f"--corpus={empty}", f"--out={tmp_path / 'y'}"],
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert f"lair.index: error: {empty}: no usable document" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "y").exists()


class _Flags:
  def __init__(self, **values):
    self.__dict__.update(values)


def test_multilingual_e5_index_matches_sentence_transformers(e5_small_dir):
  """The real encoder, a plain HF folder: mean pooling, normalisation and e5's prefixes."""
  from sentence_transformers import SentenceTransformer  # pylint: disable=g-import-not-at-top
  config = configs.default_config()
  config.model.query_prefix, config.model.passage_prefix = "query: ", "passage: "
  docs = [d for spec in CORPUS for d in list(api.read_corpus(spec))[:40]]
  index = api.build_index(api.load_retriever(str(e5_small_dir), config=config), docs)
  model = SentenceTransformer(str(e5_small_dir), device="cpu")  # Mean pooling by default.
  d = model.encode([x["text"] for x in docs], prompt="passage: ", normalize_embeddings=True)
  q = model.encode(QUERIES, prompt="query: ", normalize_embeddings=True)
  np.testing.assert_allclose(index.embeddings, d, atol=1e-4)
  ids = [x["id"] for x in docs]
  for hits, vector in zip(index.search(QUERIES, k=10), q):
    _assert_same_ranking([h.id for h in hits], [h.score for h in hits], d @ vector, ids, 10,
                         atol=1e-4)
