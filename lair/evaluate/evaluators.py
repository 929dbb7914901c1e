"""Evaluation sets: LAReQA (XQuAD-R / MLQA-R), Tatoeba bitext retrieval, BEIR.

Each entry of `config.eval.sets` is a dict:

  name        key prefix of the metrics ("xquad-r" -> "xquad-r/map@20/mean").
  kind        "lareqa" | "tatoeba" | "beir" | "langid".
  paths       list of paths:
                lareqa:  one SQuAD-style JSON per language with `sentence_breaks` (en.json, de.json,
                         ...; the language is the file name's stem).
                tatoeba: line-aligned pairs, as prefixes "DIR/tatoeba.xxx-eng" (files PREFIX.xxx
                         and PREFIX.eng) or "xxx:PATH,eng:PATH".
                beir:    BEIR folders (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv), one per
                         language or subset; the folder's name names it.
                langid:  sentences per language: "xxx:PATH" files (one sentence a line) or
                         Tatoeba prefixes "DIR/tatoeba.xxx-eng" (their xxx side).
  languages   optional list: keep only these language codes (file stems / pair sources / langid
              languages / BEIR folder names).
  max_questions  optional int (lareqa): keep the first N question ids of the first file, in every
                 language; the pool shrinks to the paragraphs those questions come from (a slice
                 for quick checks). 0: all. For beir: the first N queries that have qrels.
  max_pairs   optional int (tatoeba): the first N pairs of each language. 0: all.
  metrics     optional list overriding the defaults below (names like "ndcg@10").
  split       optional (beir): the qrels split, default "test".
  max_len     optional int: token cut-off for this set (default: config.eval.max_len, else
              config.data.max_query_len for queries, max_sentence_len for Tatoeba sentences,
              max_passage_len for passages).
  max_per_language  optional int (langid): sentences per language, half to fit the probe and
              half to test it (default 500).

Metrics come back flat: "{name}/{metric}/{group}" per language (or BEIR folder) and
"{name}/{metric}/mean", the unweighted mean over groups.

Language bias. A lareqa set also reports, under "{name}/bias/...", for each question language q:
  own_share@K       the share of q's top K candidates that are in q's language,
  unbiased_share    the share of q's relevant answers in q's language (what a retriever with no
                    language preference would show; 1 / #languages in XQuAD-R),
  own_excess@K      their difference ("/mean" is the one-number summary: 0 is unbiased),
  recall@K->a       recall@K of q's answers in language a: row a, column q of a language x
                    language matrix.
A langid set fits a linear probe (ridge regression onto one-hot languages) on half the
sentences' embeddings and reports its accuracy on the other half, "{name}/acc/{lang}" and mean,
next to "{name}/chance/mean" (1 / #languages): lower means less language identity.
"""
import collections
import dataclasses
import os
import re
from typing import Callable, Dict, List, Mapping, Sequence

import numpy as np

from lair.data import readers
from lair.errors import ConfigError
from lair.evaluate import metrics as metrics_lib

DEFAULT_METRICS = {
    "lareqa": ("map@20", "mrr@20", "recall@20"),
    "tatoeba": ("acc_x2y", "acc_y2x", "acc"),
    "beir": ("ndcg@10", "mrr@10", "recall@100"),
    "langid": ("acc",),
}
KINDS = tuple(DEFAULT_METRICS)

Encoder = Callable[[Sequence[str]], np.ndarray]  # texts -> [N, D]
Searcher = Callable[[np.ndarray, np.ndarray, int], tuple]  # (queries, db, k) -> (scores, ids)


@dataclasses.dataclass
class Encoders:
  """How one set's texts become vectors: queries, passages, and bitext sentences."""
  query: Encoder
  passage: Encoder
  sentence: Encoder  # Tatoeba: both sides use the query tower and prefix.


def set_errors(spec: Mapping) -> list[str]:
  """What is wrong with one config.eval.sets entry, naming it and the field (files included)."""
  name = spec.get("name", "?")
  for key in ("name", "kind", "paths"):
    if not spec.get(key):
      return [f"config.eval.sets entry {name!r}: missing {key!r} "
              "(expected {name, kind, paths, ...})"]
  if spec["kind"] not in KINDS:
    return [f"config.eval.sets entry {name!r}: kind={spec['kind']!r}, expected one of {KINDS}"]
  if isinstance(spec["paths"], str):
    return [f"config.eval.sets entry {name!r}: paths must be a list of paths, got the string "
            f"{spec['paths']!r}"]
  files = []
  for path in spec["paths"]:
    try:
      if spec["kind"] == "tatoeba":
        files += [f for _, f in readers.parse_aligned_spec(path)]
      elif spec["kind"] == "langid":
        files.append(_langid_source(path)[1])
      else:
        files.append(path)
    except readers.DataError as e:
      return [f"config.eval.sets entry {name!r}: {e}"]
  errors = [f"config.eval.sets entry {name!r}: {f}: no such file or folder"
            for f in files if not os.path.exists(f)]
  codes = set_languages(spec)
  twice = sorted({c for c in codes if codes.count(c) > 1})
  if twice:
    errors.append(f"config.eval.sets entry {name!r}: paths give language(s) {twice} more than "
                  f"once; expected one path per language (results are keyed by it)")
  missing = [c for c in spec.get("languages") or () if c not in codes]
  if missing:
    errors.append(f"config.eval.sets entry {name!r}: languages {missing} are not in its paths "
                  f"(which give {codes})")
  return errors + metric_errors(spec)


def set_languages(spec: Mapping) -> List[str]:
  """The language codes (groups) a set's paths give, read from their names alone.

  lareqa: each file name's stem; tatoeba: each pair's source language; langid: each path's
  language; beir: each folder's name. Assumes `paths` parse (set_errors checks that first).
  """
  codes = []
  for path in spec["paths"]:
    if spec["kind"] == "lareqa":
      codes.append(readers.lareqa_language(path))
    elif spec["kind"] == "tatoeba":
      codes.append(readers.parse_aligned_spec(path)[0][0])
    elif spec["kind"] == "langid":
      codes.append(_langid_source(path)[0])
    else:
      codes.append(beir_group(path))
  return codes


def metric_errors(spec: Mapping) -> list[str]:
  """Unknown names in a set's `metrics`: lareqa and beir take ranking metrics ("ndcg@10"),
  tatoeba and langid their own names (DEFAULT_METRICS)."""
  names = spec.get("metrics") or []
  where = f"config.eval.sets entry {spec.get('name', '?')!r}: metrics"
  if isinstance(names, str):
    return [f"{where}={names!r}: expected a list of names, e.g. ['{names}']"]
  if spec["kind"] in ("lareqa", "beir"):
    bad = [n for n in names if n.partition("@")[0] not in metrics_lib.RANKING_METRICS
           or not n.partition("@")[2].isdigit() or int(n.partition("@")[2]) == 0]
    expected = (f"{sorted(metrics_lib.RANKING_METRICS)} followed by @k (k >= 1), "
                f"e.g. 'ndcg@10'")
  else:
    bad = [n for n in names if n not in DEFAULT_METRICS[spec["kind"]]]
    expected = f"some of {DEFAULT_METRICS[spec['kind']]}"
  return [f"{where}: {bad} unknown for kind {spec['kind']!r}; expected {expected}"] if bad else []


def check_set(spec: Mapping) -> None:
  """Raises ConfigError naming the config.eval.sets entry and the field at fault."""
  errors = set_errors(spec)
  if errors:
    raise ConfigError("; ".join(errors))


SEARCH_METHODS = ("auto", "exact", "scann")


def config_errors(eval_cfg) -> list[str]:
  """What is wrong with `config.eval` (one line per key or set)."""
  errors = [e for spec in eval_cfg.sets for e in set_errors(dict(spec))]
  if eval_cfg.search not in SEARCH_METHODS:
    errors.append(f"config.eval.search={eval_cfg.search!r}: expected one of {SEARCH_METHODS}")
  for key in ("top_k", "batch_size"):
    if int(eval_cfg[key]) <= 0:
      errors.append(f"config.eval.{key}={eval_cfg[key]}: expected a positive integer")
  if int(eval_cfg.max_len) < 0:
    errors.append(f"config.eval.max_len={eval_cfg.max_len}: expected 0 (the training "
                  "cut-offs) or a positive number of tokens")
  if eval_cfg.select_best:
    names = [dict(s).get("name") for s in eval_cfg.sets]
    if eval_cfg.select_best.count("/") < 2 or eval_cfg.select_best.split("/")[0] not in names:
      errors.append(f"config.eval.select_best={eval_cfg.select_best!r}: expected "
                    f"'SET/METRIC/GROUP' with SET one of config.eval.sets' names {names}")
  return errors


# ----------------------------------------------------------------------------
# LAReQA.


@dataclasses.dataclass
class LareqaPool:
  """Questions of every language against the pool of every language's sentences.

  `relevant[i]` holds the pool indices of question i's answer sentence in every language
  (LAReQA: the same question id answered in each language of the pool).
  """
  questions: List[str]
  question_langs: List[str]
  sentences: List[str]
  sentence_langs: List[str]
  relevant: List[Dict[int, int]]


def _languages_of(spec: Mapping, codes: Sequence[str]) -> List[str]:
  wanted = spec.get("languages") or codes
  missing = sorted(set(wanted) - set(codes))
  if missing:
    raise ValueError(f"config.eval.sets entry {spec['name']!r}: languages {missing} are not in "
                     f"its paths (which give {list(codes)})")
  return [c for c in codes if c in wanted]


def build_lareqa_pool(sets: Sequence[readers.LareqaSet], max_questions: int = 0) -> LareqaPool:
  """Pools the languages of `sets` (one `readers.read_lareqa` result per language)."""
  keep_ids = None
  if max_questions:
    keep_ids = set(sets[0].question_ids[:max_questions])
  pool = LareqaPool([], [], [], [], [])
  answers_by_id = collections.defaultdict(dict)  # question id -> {pool index: 1}
  question_ids = []
  for lareqa in sets:
    keep_contexts = None
    if keep_ids is not None:
      keep_contexts = {lareqa.sentence_context[a]
                       for qid, a in zip(lareqa.question_ids, lareqa.answer) if qid in keep_ids}
    pool_index = {}  # This language's sentence index -> pool index.
    for i, (text, context) in enumerate(zip(lareqa.sentences, lareqa.sentence_context)):
      if keep_contexts is None or context in keep_contexts:
        pool_index[i] = len(pool.sentences)
        pool.sentences.append(text)
        pool.sentence_langs.append(lareqa.language)
    for qid, question, answer in zip(lareqa.question_ids, lareqa.questions, lareqa.answer):
      if keep_ids is not None and qid not in keep_ids:
        continue
      answers_by_id[qid][pool_index[answer]] = 1
      question_ids.append(qid)
      pool.questions.append(question)
      pool.question_langs.append(lareqa.language)
  pool.relevant = [answers_by_id[qid] for qid in question_ids]
  return pool


def load_lareqa(spec: Mapping) -> LareqaPool:
  """The pool of a `kind: lareqa` set (see the module docstring for the fields)."""
  by_lang = {}
  for path in spec["paths"]:
    lareqa = readers.read_lareqa(path, log=readers.SkipLog())
    by_lang[lareqa.language] = lareqa
  langs = _languages_of(spec, list(by_lang))
  return build_lareqa_pool([by_lang[c] for c in langs], int(spec.get("max_questions", 0) or 0))


def _grouped_means(per_query: Mapping[str, np.ndarray], groups: Sequence[str],
                   name: str) -> Dict[str, float]:
  """{"{name}/{metric}/{group}", "{name}/{metric}/mean"} from per-query vectors."""
  groups = np.asarray(groups)
  out = {}
  for metric, values in per_query.items():
    per_group = {g: float(np.nanmean(values[groups == g])) if np.any(
        ~np.isnan(values[groups == g])) else float("nan") for g in dict.fromkeys(groups.tolist())}
    out.update({f"{name}/{metric}/{g}": v for g, v in per_group.items()})
    out[f"{name}/{metric}/mean"] = float(np.nanmean(list(per_group.values())))
  return out


def _metric_names(spec: Mapping) -> List[str]:
  return list(spec.get("metrics") or DEFAULT_METRICS[spec["kind"]])


def _depth(names: Sequence[str], top_k: int) -> int:
  """Neighbours to retrieve: config.eval.top_k, or more when a metric asks for more."""
  return max([top_k] + [int(n.partition("@")[2]) for n in names if "@" in n])


def _ranked(searcher: Searcher, queries: np.ndarray, db: np.ndarray, depth: int) -> np.ndarray:
  """`[Q, depth]` candidate ids, best first; -1 pads past the end of a pool smaller than depth."""
  _, ranked = searcher(queries, db, depth)
  return np.pad(ranked, ((0, 0), (0, depth - ranked.shape[1])), constant_values=-1)


def evaluate_lareqa(spec: Mapping, encoders: Encoders, searcher: Searcher,
                    top_k: int) -> Dict[str, float]:
  """Every question against every sentence of every language; means per question language.

  Also the language-bias block (module docstring), at K = config.eval.top_k.
  """
  pool = load_lareqa(spec)
  names = _metric_names(spec)
  q = encoders.query(pool.questions)
  db = encoders.passage(pool.sentences)
  ranked = _ranked(searcher, q, db, _depth(names, top_k))
  per_query = metrics_lib.ranking_metrics(ranked, pool.relevant, names)
  results = _grouped_means(per_query, pool.question_langs, spec["name"])
  results.update(language_bias(ranked, pool, top_k, f"{spec['name']}/bias"))
  return results


def language_bias(ranked: np.ndarray, pool: LareqaPool, k: int, name: str) -> Dict[str, float]:
  """The bias block of a LAReQA pool (module docstring), flat keys under `name`."""
  own = metrics_lib.own_language_share(ranked, pool.question_langs, pool.sentence_langs, k)
  unbiased = metrics_lib.unbiased_own_share(pool.relevant, pool.question_langs,
                                            pool.sentence_langs)
  per_query = {f"own_share@{k}": own, "unbiased_share": unbiased,
               f"own_excess@{k}": own - unbiased}
  for lang in dict.fromkeys(pool.sentence_langs):
    per_query[f"recall@{k}->{lang}"] = metrics_lib.recall_in_language(
        ranked, pool.relevant, pool.sentence_langs, lang, k)
  return _grouped_means(per_query, pool.question_langs, name)


# ----------------------------------------------------------------------------
# Tatoeba.


def load_tatoeba(spec: Mapping) -> Dict[str, tuple]:
  """{language: (x sentences, y sentences)}, line i of x translating line i of y.

  Pairs are keyed by their source (x) language, so two paths with the same source
  language (deu-eng and deu-fra) are a ValueError rather than one hiding the other.
  """
  pairs, path_of = {}, {}
  for path in spec["paths"]:
    (x_code, x_path), (_, y_path) = readers.parse_aligned_spec(path)
    if x_code in path_of:
      raise ValueError(f"config.eval.sets entry {spec.get('name', '?')!r}: paths "
                       f"{path_of[x_code]!r} and {path!r} both have source language "
                       f"{x_code!r}; expected one pair per source language (results are "
                       "keyed by it)")
    path_of[x_code] = path
    x, y = readers.read_tatoeba(x_path, y_path, log=readers.SkipLog())
    max_pairs = int(spec.get("max_pairs", 0) or 0)
    pairs[x_code] = (x[:max_pairs], y[:max_pairs]) if max_pairs else (x, y)
  return {c: pairs[c] for c in _languages_of(spec, list(pairs))}


def evaluate_tatoeba(spec: Mapping, encoders: Encoders, searcher: Searcher,
                     top_k: int) -> Dict[str, float]:
  """Top-1 accuracy x->y and y->x per language, and their mean ("acc")."""
  del top_k  # Accuracy needs the nearest neighbour only.
  per_lang = collections.defaultdict(dict)
  for lang, (x, y) in load_tatoeba(spec).items():
    x_emb, y_emb = encoders.sentence(x), encoders.sentence(y)
    expected = np.arange(len(x))
    x2y = metrics_lib.top1_accuracy(searcher(x_emb, y_emb, 1)[1][:, 0], expected)
    y2x = metrics_lib.top1_accuracy(searcher(y_emb, x_emb, 1)[1][:, 0], expected)
    per_lang["acc_x2y"][lang], per_lang["acc_y2x"][lang] = x2y, y2x
    per_lang["acc"][lang] = (x2y + y2x) / 2
  out = {}
  for metric in _metric_names(spec):
    if metric not in per_lang:
      raise ValueError(f"config.eval.sets entry {spec['name']!r}: metric {metric!r} is not a "
                       f"tatoeba metric; expected some of {DEFAULT_METRICS['tatoeba']}")
    out.update({f"{spec['name']}/{metric}/{l}": v for l, v in per_lang[metric].items()})
    out[f"{spec['name']}/{metric}/mean"] = float(np.mean(list(per_lang[metric].values())))
  return out


# ----------------------------------------------------------------------------
# BEIR.


def beir_group(folder: str) -> str:
  """A BEIR folder's group (its metrics' language/subset key, and its `languages` code)."""
  return os.path.basename(os.path.normpath(folder))


def evaluate_beir(spec: Mapping, encoders: Encoders, searcher: Searcher,
                  top_k: int) -> Dict[str, float]:
  """Each folder's queries against its own corpus; groups are the folder names."""
  names = _metric_names(spec)
  per_query, groups = collections.defaultdict(list), []
  wanted = spec.get("languages")
  for folder in spec["paths"]:
    if wanted and beir_group(folder) not in wanted:
      continue
    beir = readers.read_beir(folder, split=spec.get("split", "test"), log=readers.SkipLog())
    doc_ids = list(beir.corpus)
    doc_index = {d: i for i, d in enumerate(doc_ids)}
    query_ids = list(beir.qrels)
    if spec.get("max_questions"):
      query_ids = query_ids[:int(spec["max_questions"])]
    qrels = [{doc_index[d]: g for d, g in beir.qrels[qid].items()} for qid in query_ids]
    q = encoders.query([beir.queries[qid] for qid in query_ids])
    db = encoders.passage([readers.beir_passage(beir.corpus[d]) for d in doc_ids])
    ranked = _ranked(searcher, q, db, _depth(names, top_k))
    for metric, values in metrics_lib.ranking_metrics(ranked, qrels, names).items():
      per_query[metric].append(values)
    groups += [beir_group(folder)] * len(query_ids)
  return _grouped_means({m: np.concatenate(v) for m, v in per_query.items()}, groups,
                        spec["name"])


# ----------------------------------------------------------------------------
# Language identification probe.


def _langid_source(path: str) -> tuple[str, str]:
  """(language, file) of a langid path: "xxx:PATH" or a Tatoeba prefix (its xxx side)."""
  if re.match(rf"^{readers.LANGUAGE_CODE}:", path):
    return readers.parse_mono_spec(path)
  (code, file), _ = readers.parse_aligned_spec(path)
  return code, file


def load_langid(spec: Mapping) -> Dict[str, List[str]]:
  """{language: sentences}, at most max_per_language non-empty lines each (first ones)."""
  limit = int(spec.get("max_per_language", 0) or 500)
  by_lang = {}
  for path in spec["paths"]:
    code, file = _langid_source(path)
    if code in by_lang:
      raise ConfigError(f"config.eval.sets entry {spec['name']!r}: language {code!r} is given "
                        f"twice (one path per language)")
    lines = [t for _, t in readers.read_lines(file, readers.SkipLog()) if t and t.strip()]
    by_lang[code] = [readers.clean_text(t) for t in lines[:limit]]
  return {c: by_lang[c] for c in _languages_of(spec, list(by_lang))}


def fit_linear_probe(x: np.ndarray, labels: np.ndarray, num_classes: int,
                     l2: float = 1.0) -> np.ndarray:
  """A linear classifier: ridge regression of one-hot labels on [x, 1]. Returns W [D + 1, C].

  Closed form (no iterations, no seed): W = (X^T X + l2 I)^-1 X^T Y.
  """
  features = np.concatenate([x, np.ones((len(x), 1))], axis=1).astype(np.float64)
  targets = np.eye(num_classes)[labels]
  gram = features.T @ features + l2 * np.eye(features.shape[1])
  return np.linalg.solve(gram, features.T @ targets)


def evaluate_langid(spec: Mapping, encoders: Encoders, searcher: Searcher,
                    top_k: int) -> Dict[str, float]:
  """Accuracy of a linear language-identification probe on held-out sentences (per language)."""
  del searcher, top_k
  by_lang = load_langid(spec)
  langs = list(by_lang)
  if len(langs) < 2:
    raise ConfigError(f"config.eval.sets entry {spec['name']!r}: a langid set needs sentences "
                      f"of 2 or more languages, got {langs}")
  train_x, train_y, test_x, test_y = [], [], [], []
  for label, lang in enumerate(langs):
    emb = encoders.sentence(by_lang[lang])
    train_x.append(emb[0::2])  # Even lines fit the probe, odd lines test it.
    test_x.append(emb[1::2])
    train_y += [label] * len(emb[0::2])
    test_y += [label] * len(emb[1::2])
  weights = fit_linear_probe(np.concatenate(train_x), np.asarray(train_y), len(langs))
  test = np.concatenate(test_x)
  predicted = np.argmax(np.concatenate([test, np.ones((len(test), 1))], axis=1) @ weights, axis=1)
  correct = predicted == np.asarray(test_y)
  out = {f"{spec['name']}/acc/{lang}": float(correct[np.asarray(test_y) == i].mean())
         for i, lang in enumerate(langs)}
  out[f"{spec['name']}/acc/mean"] = float(np.mean([out[f"{spec['name']}/acc/{l}"] for l in langs]))
  out[f"{spec['name']}/chance/mean"] = 1.0 / len(langs)
  return out


EVALUATORS = {"lareqa": evaluate_lareqa, "tatoeba": evaluate_tatoeba, "beir": evaluate_beir,
              "langid": evaluate_langid}
