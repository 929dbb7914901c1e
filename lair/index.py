r"""A searchable index of a corpus: its embeddings, its documents, the model, a searcher.

    python -m lair.index --workdir=RUN [--step=N|best] --corpus=FILE[,FILE...] --out=DIR
    python -m lair.index --hf=MODEL_DIR --corpus=deu:de.txt,fra:fr.txt --out=DIR

embeds every document of the corpus (the passage side of the retriever, with its passage
prefix), sharded over the devices with a progress bar, and writes a folder that
`python -m lair.search` and `lair.mine` (and `load_index` in Python) search without embedding
the corpus again. Corpus files (`lair.data.readers.read_corpus`): JSONL `{"id", "text"}` (BEIR's
`corpus.jsonl` with `_id` and `title`, or a BEIR folder; an optional "lang" or "language"),
TSV `id<TAB>text`, or one document per line (id "FILE_NAME:LINE"); `--corpus_format` overrides
the choice by file name. "xxx:PATH" (or --language=xxx for every file) gives documents their
language, which search results show. Bad lines are skipped and counted, naming file:line.

Settings come from the run's config.json (with --workdir; else lair's defaults) and
--config.KEY=VALUE overrides: model.passage_prefix, eval.max_len (tokens kept; 0:
data.max_passage_len), data.length_buckets, eval.batch_size; eval.exact_below (--search=auto,
the default, searches exactly below this many documents and with ScaNN from there;
--search=exact or scann choose) and eval.scann (ScaNN's settings, 0 scaling to the corpus).

The folder (written whole: a kill leaves the old index or the new one):

    index.json      {"format": 1, "num_docs": N, "dim": D, "search": "exact" | "scann",
                     "scann": the ScaNN settings or null, "languages": {lang: count},
                     "corpus": the corpus files, "skipped": {reason: count},
                     "model": the retriever's identity: its "source" ({"workdir", "step"} or
                     {"hf"}), "retriever" (the RetrieverConfig), query/passage prefixes,
                     max lengths, batch size and buckets, "dim"}
    embeddings.npy  [N, D] float32: row i embeds document i
    docs.jsonl      document i on line i+1: {"id", "text", "lang"} ("" when not known)
    scann/          with "search": "scann", ScaNN's own searcher (`searcher.serialize`, read back
                    with `scann_ops_pybind.load_searcher`)

Search reuses `lair.evaluate.search` (exact inner product, or the ScaNN searcher), so an index
loaded again returns exactly what the one just built does.
"""
import dataclasses
import json
import os
import time
from typing import Iterable, Optional, Sequence, Union

from absl import flags
import jax
import ml_collections
import numpy as np

from lair import cli
from lair import configs
from lair import files
from lair import inference
from lair import sharding
from lair.data import readers
from lair.errors import ConfigError
from lair.errors import UserError
from lair.evaluate import search as search_lib

FORMAT_VERSION = 1
INDEX_JSON = "index.json"
EMBEDDINGS = "embeddings.npy"
DOCS = "docs.jsonl"
SCANN_DIR = "scann"
SEARCH_METHODS = ("auto", "exact", "scann")


@dataclasses.dataclass(frozen=True)
class Hit:
  """One search result: the document at `row` of the index, ranked `rank` (1 = best)."""
  rank: int
  score: float
  row: int
  id: str
  text: str
  lang: str

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


class Index:
  """Documents, their embeddings [N, D] and a searcher; `search(queries, k)` gives hits.

  Build one with `build_index`, read one with `load_index`. Query texts are embedded with
  `retriever` (by default the model that embedded the documents, loaded when first needed).
  """

  def __init__(self, embeddings: np.ndarray, docs: Sequence[dict], info: dict, *,
               searcher=None, folder: Optional[str] = None,
               retriever: Optional[inference.Retriever] = None):
    self.embeddings = np.asarray(embeddings, np.float32)
    self.docs = list(docs)
    self.info = info
    self.searcher = searcher  # ScaNN's, when info["search"] == "scann".
    self.folder = folder
    self._retriever = retriever

  def __len__(self) -> int:
    return len(self.docs)

  def __repr__(self) -> str:
    return (f"Index({len(self)} documents, dim {self.info['dim']}, {self.info['search']} "
            f"search{', ' + self.folder if self.folder else ''})")

  @property
  def retriever(self) -> inference.Retriever:
    """The retriever that embeds queries: the one the index was built with, unless another
    was given (it must give vectors of the same width)."""
    if self._retriever is None:
      self._retriever = inference.from_identity(self.info["model"])
    return self._retriever

  @retriever.setter
  def retriever(self, retriever: inference.Retriever) -> None:
    if retriever.dim != self.info["dim"]:
      raise ConfigError(f"the retriever gives {retriever.dim}-d vectors but the index "
                        f"{self.folder or ''} holds {self.info['dim']}-d ones")
    self._retriever = retriever

  def search_vectors(self, vectors: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Query vectors [Q, D] -> (scores [Q, k'], rows [Q, k']) best first, k' = min(k, N)."""
    vectors = np.asarray(vectors, np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != self.info["dim"]:
      raise ConfigError(f"query vectors of shape {vectors.shape}: expected [Q, "
                        f"{self.info['dim']}]")
    if self.info["search"] == "scann":
      return search_lib.search_scann(self.searcher, vectors, k, num_candidates=len(self),
                                     reorder=int(self.info["scann"]["reorder"]))
    return search_lib.exact_search(vectors, self.embeddings, k)

  def search(self, queries: Union[Sequence[str], np.ndarray], k: int = 10) -> list[list[Hit]]:
    """The top `k` documents of each query (texts, embedded as queries, or vectors [Q, D])."""
    if isinstance(queries, str):
      queries = [queries]
    if not isinstance(queries, np.ndarray):
      queries = self.retriever.encode(list(queries), kind="query")
    scores, rows = self.search_vectors(queries, k)
    return [[self.hit(rank, float(score), int(row))
             for rank, (score, row) in enumerate(zip(s, r), start=1)]
            for s, r in zip(scores, rows)]

  def hit(self, rank: int, score: float, row: int) -> Hit:
    doc = self.docs[row]
    return Hit(rank=rank, score=score, row=row, id=doc["id"], text=doc["text"],
               lang=doc.get("lang", ""))


def _documents(docs: Iterable[Union[str, dict]]) -> list[dict]:
  """{"id", "text", "lang"} dicts; a plain string becomes a document whose id is its row."""
  out = []
  for i, doc in enumerate(docs):
    if isinstance(doc, str):
      doc = {"id": str(i), "text": doc}
    out.append({"id": str(doc["id"]), "text": str(doc["text"]), "lang": str(doc.get("lang") or "")})
  return out


def choose_method(method: str, num_docs: int, exact_below: int) -> str:
  """"exact" or "scann" for `num_docs` documents ("auto": exact below `exact_below`)."""
  if method not in SEARCH_METHODS:
    raise ConfigError(f"--search={method!r}: expected one of {SEARCH_METHODS}")
  if method == "auto":
    return "exact" if num_docs < exact_below else "scann"
  return method


def build_index(retriever: inference.Retriever, docs: Iterable[Union[str, dict]],
                folder: Optional[str] = None, *, method: str = "auto",
                exact_below: int = 20000,
                scann_config: Optional[ml_collections.ConfigDict] = None,
                scann_k: int = 100, progress: bool = False, corpus: Sequence[str] = (),
                skipped: Optional[dict] = None, overwrite: bool = False) -> Index:
  """Embeds `docs` (passage side) and returns their index, written to `folder` when given.

  Args:
    retriever: embeds the documents, and by default the queries searched later.
    docs: documents {"id", "text", "lang"?} (`lair.data.readers.read_corpus`), or strings
      (their ids are their positions "0", "1", ...).
    folder: where to save the index (the module docstring's layout); None keeps it in memory.
    method: "auto" (exact below `exact_below` documents, else ScaNN), "exact" or "scann".
    exact_below: config.eval.exact_below.
    scann_config: config.eval.scann (0 values scale to the corpus: see
      `lair.evaluate.search.scann_settings`).
    scann_k: the neighbours a ScaNN search re-ranks at least (more when a search asks for more).
    progress: show a progress bar while embedding.
    corpus, skipped: recorded in index.json (the corpus files, the reader's skip counts).
    overwrite: replace an existing index in `folder` (a folder that is not an index is never
      replaced).
  """
  docs = _documents(docs)
  if not docs:
    raise UserError("no documents to index: the corpus is empty")
  if len({d["id"] for d in docs}) != len(docs):
    raise UserError("document ids are not unique; read the corpus with "
                    "lair.data.readers.read_corpus, which skips repeated ids")
  if folder is not None:
    check_out_folder(folder, overwrite)
  method = choose_method(method, len(docs), exact_below)
  start = time.time()
  embeddings = retriever.encode([d["text"] for d in docs], kind="passage", progress=progress)
  seconds = time.time() - start
  searcher, settings = None, None
  if method == "scann":
    searcher, settings = search_lib.build_scann(embeddings, scann_k, scann_config)
  languages = {}
  for d in docs:
    languages[d["lang"]] = languages.get(d["lang"], 0) + 1
  info = {"format": FORMAT_VERSION, "num_docs": len(docs), "dim": int(embeddings.shape[1]),
          "search": method, "scann": settings, "languages": languages,
          "corpus": [str(c) for c in corpus], "skipped": dict(skipped or {}),
          "model": retriever.identity(), "embed_seconds": round(seconds, 3)}
  index = Index(embeddings, docs, info, searcher=searcher, folder=folder, retriever=retriever)
  if folder is not None:
    if jax.process_index() == 0:  # Every host embedded the same corpus; one writes it.
      files.replace_folder(folder, lambda tmp: _write(index, tmp))
    index.folder = os.path.abspath(folder)
  return index


def check_out_folder(folder: str, overwrite: bool) -> None:
  """Refuses a non-empty `folder` unless it is an index and `overwrite` is set."""
  if not os.path.exists(folder):
    return
  if not os.path.isdir(folder):
    raise ConfigError(f"--out={folder} is a file; expected a folder for the index")
  if not os.listdir(folder):
    return
  if not os.path.isfile(os.path.join(folder, INDEX_JSON)):
    raise ConfigError(f"--out={folder}: the folder exists, is not empty and holds no "
                      f"{INDEX_JSON}; lair replaces only an index it wrote",
                      hint="choose a new or empty --out folder")
  if not overwrite:
    raise ConfigError(f"--out={folder}: an index is there already",
                      hint="pass --overwrite to replace it, or choose another --out")


def _write(index: Index, folder: str) -> None:
  with open(os.path.join(folder, EMBEDDINGS), "wb") as f:
    np.save(f, index.embeddings)
  with open(os.path.join(folder, DOCS), "w", encoding="utf-8") as f:
    for doc in index.docs:
      f.write(json.dumps(doc, ensure_ascii=False) + "\n")
  if index.searcher is not None:
    os.makedirs(os.path.join(folder, SCANN_DIR))
    # Relative paths: the folder is written beside its target and renamed into place.
    index.searcher.serialize(os.path.join(folder, SCANN_DIR), relative_path=True)
  files.write_json(os.path.join(folder, INDEX_JSON), index.info)


def load_index(folder: str, *, retriever: Optional[inference.Retriever] = None) -> Index:
  """The index saved in `folder` by `build_index` / `python -m lair.index`.

  `retriever` embeds query texts (default: the model recorded in index.json, loaded when
  first needed).
  """
  folder = os.path.abspath(os.path.expanduser(str(folder)))
  info_path = os.path.join(folder, INDEX_JSON)
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"--index={folder}: no such folder; build one with "
                            f"python -m lair.index")
  if not os.path.isfile(info_path):
    raise FileNotFoundError(f"--index={folder}: no {INDEX_JSON}; expected a folder written by "
                            f"python -m lair.index")
  info = files.read_json(info_path)
  if info.get("format") != FORMAT_VERSION:
    raise UserError(f"{info_path}: index format {info.get('format')!r}; this lair reads format "
                    f"{FORMAT_VERSION}", hint="rebuild the index with python -m lair.index")
  for name in (EMBEDDINGS, DOCS):
    if not os.path.isfile(os.path.join(folder, name)):
      raise FileNotFoundError(f"{os.path.join(folder, name)} not found: the index is incomplete; "
                              f"rebuild it with python -m lair.index")
  embeddings = np.load(os.path.join(folder, EMBEDDINGS))
  with open(os.path.join(folder, DOCS), encoding="utf-8") as f:
    docs = [json.loads(line) for line in f if line.strip()]
  if embeddings.shape != (info["num_docs"], info["dim"]) or len(docs) != info["num_docs"]:
    raise UserError(f"{folder}: {EMBEDDINGS} is {list(embeddings.shape)} and {DOCS} has "
                    f"{len(docs)} documents, but {INDEX_JSON} says {info['num_docs']} x "
                    f"{info['dim']}", hint="rebuild the index with python -m lair.index")
  searcher = None
  if info["search"] == "scann":
    from scann import scann_ops_pybind  # pylint: disable=g-import-not-at-top  (this path only)
    searcher = scann_ops_pybind.load_searcher(os.path.join(folder, SCANN_DIR))
  index = Index(embeddings, docs, info, searcher=searcher, folder=folder)
  if retriever is not None:
    index.retriever = retriever
  return index


# ------------------------------------------------------------------------------------------------
# python -m lair.index
# ------------------------------------------------------------------------------------------------


def define_flags(fv: flags.FlagValues) -> None:
  inference.define_model_flags(fv)
  flags.DEFINE_list("corpus", [], "corpus files (or BEIR folders); 'xxx:PATH' gives a file's "
                    "language", flag_values=fv)
  flags.DEFINE_enum("corpus_format", "auto", readers.CORPUS_FORMATS,
                    "how to read the corpus files (auto: by the file name)", flag_values=fv)
  flags.DEFINE_string("language", "", "the language of documents that name none (e.g. deu)",
                      flag_values=fv)
  flags.DEFINE_string("out", None, "the index folder to write", flag_values=fv)
  flags.DEFINE_boolean("overwrite", False, "replace an index already in --out", flag_values=fv)
  flags.DEFINE_enum("search", "auto", SEARCH_METHODS, "auto: exact search below "
                    "config.eval.exact_below documents, ScaNN from there; exact; scann",
                    flag_values=fv)


def read_corpus_flags(specs: Sequence[str], corpus_format: str, language: str,
                      flag: str = "--corpus") -> tuple[list[dict], dict]:
  """(documents, skipped {reason: n}) of the corpus files a flag names; errors name the flag."""
  if not specs:
    raise ConfigError(f"{flag} is empty: expected corpus files, e.g. {flag}=docs.jsonl")
  for spec in specs:
    _, path = readers.parse_corpus_spec(spec)
    if not os.path.exists(path):
      raise FileNotFoundError(f"{flag}: {path}: no such file")
  log = readers.SkipLog()
  docs = list(readers.read_corpus(list(specs), format=corpus_format, language=language, log=log))
  return docs, log.total_skipped()


def main(argv) -> None:
  config, fv = configs.parse_command_line(
      argv, define_flags, default_config_file=inference.default_config_file(argv))
  if not fv.out:
    raise ConfigError("--out=DIR is required: the folder to write the index to")
  if not inference.model_named(fv):
    raise ConfigError("no model: give --workdir=RUN_DIR (a lair training run) or --hf=DIR")
  check_out_folder(fv.out, fv.overwrite)
  docs, skipped = read_corpus_flags(fv.corpus, fv.corpus_format, fv.language)
  print(f"corpus: {len(docs)} documents, skipped {skipped or 'none'}", flush=True)
  sharding.initialize_distributed()  # Several hosts (LAIR_COORDINATOR...) embed it together.
  retriever = inference.from_flags(fv, config)
  index = build_index(retriever, docs, fv.out, method=fv.search,
                      exact_below=int(config.eval.exact_below), scann_config=config.eval.scann,
                      scann_k=max(int(config.eval.top_k), 100), progress=True,
                      corpus=list(fv.corpus), skipped=skipped, overwrite=fv.overwrite)
  seconds = index.info["embed_seconds"]
  print(f"indexed {len(index)} documents ({index.info['dim']}-d, {index.info['search']} search; "
        f"embedded in {seconds:.1f} s, {len(index) / max(seconds, 1e-9):.0f} docs/s) "
        f"in {index.folder}", flush=True)


if __name__ == "__main__":
  cli.run(main)
