"""Readers for lair's file formats: plain Python rows, with every bad row counted.

Training readers yield dict rows, one per usable example:

* IR: `{"query": str, "passage": str, "negatives": [str] * K}` from SQuAD JSON
  (`read_squad`), MS MARCO-style triples TSV (`read_triples`), BEIR folders
  (`read_beir_pairs`) and JSONL `{"query", "pos": [...], "neg": [...]}`, the format of
  FlagEmbedding and sentence-transformers users (`read_ir_jsonl`); `read_ir` picks one by
  config.data.ir.format.
* Parallel: `{"src": str, "tgt": str, "src_lang": int, "tgt_lang": int}` from a
  `source eng xxx` TSV (`read_parallel_tsv`) or a line-aligned file pair
  (`read_aligned`). Language ids index the `languages` list (config.data.languages).
* Monolingual: `{"text": str, "lang": int}` from one sentence per line (`read_mono`).

Evaluation readers return whole sets: `read_lareqa` (XQuAD-R / LAReQA JSON),
`read_tatoeba` (a line-aligned pair) and `read_beir` (corpus, queries, qrels).

Corpora to index (`python -m lair.index`) are read by `read_corpus` into documents
`{"id": str, "text": str, "lang": str}` from JSONL (`{"id", "text"}`, BEIR's `corpus.jsonl`
with `_id` and `title`, an optional `lang`), TSV `id<TAB>text`, or plain lines.

Bad input (a malformed line, a missing column, an empty text, an unknown language
code, a SQuAD answer that is not in its context) goes through a `SkipLog`: it is
counted per file and reason and logged with a warning naming `file:line`
(for JSON: `file:data[i].paragraphs[j].qas[k]`), or raised as `DataError` when
the log is strict. A file that yields no usable row is always a `DataError`.
"""
import collections
import dataclasses
import json
import os
import re
from typing import Iterator, Sequence
import zlib

from absl import logging
import numpy as np

from lair import errors

# Reasons a row is skipped (keys of the counts that readers report).
MALFORMED = "malformed"
MISSING_COLUMN = "missing_column"
EMPTY_TEXT = "empty_text"
UNKNOWN_LANGUAGE = "unknown_language"
ANSWER_NOT_IN_CONTEXT = "answer_not_in_context"
UNKNOWN_ID = "unknown_id"  # BEIR qrels naming a query or document that is not there.
NOT_UTF8 = "not_utf8"  # A line whose bytes are not UTF-8.
HEADER = "header"  # A first line of column names in a file that has none by format.
TOO_FEW_NEGATIVES = "too_few_negatives"  # An IR row with fewer negatives than asked for.
DUPLICATE_ID = "duplicate_id"  # A corpus document whose id an earlier one has.

# Only this many warnings per (file, reason) are logged one by one; the rest are counted.
_MAX_WARNINGS_PER_REASON = 20


class DataError(errors.UserError, ValueError):
  """An input file that cannot be used (or a bad row, in strict mode)."""


class SkipLog:
  """Counts the rows kept and skipped, per file and per reason.

  `skip()` logs a warning naming the file and line (only the first
  `_MAX_WARNINGS_PER_REASON` per file and reason; all are counted), or raises
  `DataError` when `strict`. `end_file()` raises when a file gave no usable row.
  """

  def __init__(self, strict: bool = False):
    self.strict = strict
    self.kept = collections.Counter()  # file -> rows kept
    self.skipped = collections.defaultdict(collections.Counter)  # file -> reason -> n
    # Rows read but left out on purpose by a cap (builders' max_pairs_per_language),
    # counted by the cap itself, or held out of the pairs for the monolingual stream.
    self.capped = 0
    self.held_out = 0

  def keep(self, path: str, n: int = 1) -> None:
    self.kept[str(path)] += n

  def skip(self, path: str, where, reason: str, detail: str = "") -> None:
    """Counts one skipped row at `path:where` (a line number or a JSON location)."""
    path = str(path)
    message = f"{path}:{where}: {reason}" + (f" ({detail})" if detail else "")
    if self.strict:
      raise DataError(message + " [config.data.strict=True]")
    self.skipped[path][reason] += 1
    count = self.skipped[path][reason]
    if count <= _MAX_WARNINGS_PER_REASON:
      logging.warning("skipping %s", message)
    if count == _MAX_WARNINGS_PER_REASON:
      logging.warning("%s: further '%s' skips are counted, not logged", path, reason)

  def end_file(self, path: str, what: str = "row") -> None:
    """Logs the file's counts; raises when it gave no usable row."""
    path = str(path)
    skipped = dict(self.skipped.get(path, {}))
    logging.info("%s: %d %ss kept, skipped %s", path, self.kept[path], what, skipped or 0)
    if self.kept[path] == 0:
      raise DataError(f"{path}: no usable {what} (skipped: {skipped or 'none'})")

  def total_skipped(self) -> dict[str, int]:
    total = collections.Counter()
    for counts in self.skipped.values():
      total.update(counts)
    return dict(total)

  def as_dict(self) -> dict:
    """JSON-able counts: {"rows", "skipped": {reason: n}, "files": {path: {...}}}."""
    files = sorted(set(self.kept) | set(self.skipped))
    return {
        "rows": sum(self.kept.values()),
        "skipped": self.total_skipped(),
        "files": {f: {"rows": self.kept[f], "skipped": dict(self.skipped.get(f, {}))}
                  for f in files},
    }


def clean_text(text: str) -> str:
  """`text` without surrounding whitespace and byte-order marks (a few XQuAD-R
  sentences start with U+FEFF, left over from their source files)."""
  return text.replace("\ufeff", "").strip()


def _log_or_default(log):
  return log if log is not None else SkipLog()


# A language code as written in file headers and specs: ISO 639-3 ("eng"; 639-1 "en"
# also passes), optionally with a script or variant ("zho_Hans").
LANGUAGE_CODE = r"[a-z]{2,3}(?:_[A-Za-z]+)?"


def language_id(code: str, languages: Sequence[str]) -> int | None:
  """Index of ISO 639-3 `code` in `languages` (config.data.languages), or None."""
  try:
    return list(languages).index(code)
  except ValueError:
    return None


# ----------------------------------------------------------------------------
# Sentence splitting (for SQuAD's "answer sentence" target).

# A sentence ends at `.`, `!`, `?` or `…` (and any closing quotes or brackets right
# after it) followed by whitespace and then a character that is not a lowercase
# letter (`str.islower`, so any script with case); or right after CJK `。！？`
# (which need no space). The rule keeps "e.g. this" and "3.5" together; it splits
# "U.S. Army" wrongly, which is why an answer that straddles two sentences takes
# both (see `answer_sentence_span`).
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’»)\]]*(?=\s+(\S))|[。！？]+[」』”’）]*")


def split_sentences(text: str) -> list[tuple[int, int]]:
  """Character spans `[(start, end)]` of `text`'s sentences (whitespace between excluded).

  The spans are in order, do not overlap, and cover every non-space character.
  """
  ends = [m.end() for m in _SENTENCE_END.finditer(text)
          if m.group(1) is None or not m.group(1).islower()]
  spans = []
  for start, end in zip([0] + ends, ends + [len(text)]):
    chunk = text[start:end]
    start += len(chunk) - len(chunk.lstrip())
    end -= len(chunk) - len(chunk.rstrip())
    if end > start:
      spans.append((start, end))
  return spans


def answer_sentence_span(breaks: Sequence[Sequence[int]], answer_start: int,
                         answer_end: int) -> tuple[int, int]:
  """The span covering every sentence in `breaks` that overlaps [answer_start, answer_end)."""
  hit = [(s, e) for s, e in breaks if s < max(answer_end, answer_start + 1) and e > answer_start]
  if not hit:  # The answer sits in whitespace between sentences: take the next one.
    hit = [min(((s, e) for s, e in breaks if s >= answer_start), default=breaks[-1])]
  return hit[0][0], hit[-1][1]


# ----------------------------------------------------------------------------
# SQuAD / XQuAD-R / LAReQA JSON.


def load_json(path) -> dict:
  """A SQuAD-format JSON file; undecodable bytes or bad JSON are DataErrors naming file:line."""
  with open(path, "rb") as f:
    raw = f.read()
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    line = raw.count(b"\n", 0, e.start) + 1
    raise DataError(f"{path}:{line}: not UTF-8 ({e.reason} at byte {e.start})") from None
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from e
  if not isinstance(data, dict) or not isinstance(data.get("data"), list):
    raise DataError(f"{path}: expected SQuAD JSON, an object with a 'data' list")
  return data


def _locate_answer(context: str, answers) -> tuple[int, int] | None:
  """(start, end) of the first answer whose text is in `context`, or None.

  The given `answer_start` is used when the text is there; else the text's first
  occurrence (SQuAD v1.1 dev's `answer_start` is the first occurrence anyway).
  """
  for answer in answers:
    if not isinstance(answer, dict):
      continue
    text, start = answer.get("text"), answer.get("answer_start")
    if not isinstance(text, str) or not text:
      continue
    if isinstance(start, int) and context[start:start + len(text)] == text:
      return start, start + len(text)
    found = context.find(text)
    if found >= 0:
      return found, found + len(text)
  return None


@dataclasses.dataclass
class SquadQuestion:
  """One usable SQuAD question with its paragraph and answer sentence."""
  id: str
  question: str
  context: str
  sentence_breaks: list[tuple[int, int]]  # The context's sentences (given or split).
  answer_sentence: tuple[int, int]  # Span in context of the sentence(s) holding the answer.
  paragraph_index: int  # Running index of the paragraph in the file.


def _sentence_breaks(paragraph: dict, context: str) -> list[tuple[int, int]]:
  """The paragraph's `sentence_breaks` (XQuAD-R), else `split_sentences(context)`."""
  breaks = paragraph.get("sentence_breaks")
  return [tuple(b) for b in breaks] if breaks else split_sentences(context)


def iter_squad_questions(path, *, log: SkipLog | None = None) -> Iterator[SquadQuestion]:
  """Every usable question of a SQuAD-format JSON file (v1.1, XQuAD, XQuAD-R).

  Sentences come from the paragraph's `sentence_breaks` when present (XQuAD-R),
  else from `split_sentences`. Skips (counted in `log`): a question that is empty
  or missing, a paragraph without context, an answer not in its context.
  """
  return _iter_questions(path, load_json(path)["data"], log=log)


def _iter_questions(path, data: list, *, log: SkipLog | None,
                    require_id: bool = False) -> Iterator[SquadQuestion]:
  """`iter_squad_questions` of the already parsed `data` list of `path`.

  With `require_id`, a question without an "id" is a DataError naming it (LAReQA matches a
  question's answers across languages by id; made-up ids would not match).
  """
  log = _log_or_default(log)
  paragraph_index = -1
  for i, article in enumerate(data):
    for j, paragraph in enumerate(article.get("paragraphs", [])):
      paragraph_index += 1
      where = f"data[{i}].paragraphs[{j}]"
      context = paragraph.get("context")
      qas = paragraph.get("qas", [])
      if not isinstance(context, str) or not context.strip():
        for k in range(len(qas)):
          log.skip(path, f"{where}.qas[{k}]", EMPTY_TEXT, "paragraph has no context")
        continue
      breaks = _sentence_breaks(paragraph, context)
      for k, qa in enumerate(qas):
        qwhere = f"{where}.qas[{k}] (id {qa.get('id')})"
        if require_id and not str(qa.get("id") or "").strip():
          raise DataError(f"{path}: {where}.qas[{k}] has no 'id'; expected one on every "
                          f"question (answers are matched across languages by question id)")
        question = qa.get("question")
        if not isinstance(question, str):
          log.skip(path, qwhere, MISSING_COLUMN, "no 'question'")
          continue
        if not question.strip():
          log.skip(path, qwhere, EMPTY_TEXT, "empty question")
          continue
        span = _locate_answer(context, qa.get("answers") or [])
        if span is None:
          log.skip(path, qwhere, ANSWER_NOT_IN_CONTEXT,
                   f"answers {[a.get('text') for a in qa.get('answers') or []][:3]}")
          continue
        log.keep(path)
        yield SquadQuestion(
            id=str(qa.get("id", f"{i}.{j}.{k}")), question=clean_text(question),
            context=context, sentence_breaks=breaks,
            answer_sentence=answer_sentence_span(breaks, *span),
            paragraph_index=paragraph_index)
  log.end_file(path, "question")


SQUAD_TARGETS = ("sentence", "paragraph")


def squad_negatives_error(num_negatives: int, target: str) -> str:
  """Why SQuAD cannot give `num_negatives` negatives with `target`, or "" when it can."""
  if num_negatives and target != "sentence":
    return (f"config.data.ir.num_negatives={num_negatives} with squad_target={target!r}: SQuAD "
            f"negatives are other sentences of the answer's paragraph; expected "
            f"squad_target='sentence'")
  return ""


def read_squad(path, *, target: str = "sentence", num_negatives: int = 0,
               log: SkipLog | None = None) -> Iterator[dict]:
  """IR rows `{"query", "passage", "negatives"}` from SQuAD JSON.

  Args:
    path: a SQuAD-format JSON file.
    target: "sentence" (the sentence holding the answer) or "paragraph" (the context);
      config.data.ir.squad_target.
    num_negatives: K > 0 (target "sentence" only) gives each question K other sentences of
      its own paragraph as hard negatives: the ones a sentence retriever confuses most, as in
      LAReQA / XQuAD-R, whose pools hold every sentence of each paragraph. They are a sample
      seeded by the question id, so a rebuild gives the same rows; a paragraph with fewer than
      K other sentences is a `too_few_negatives` skip.
    log: counts skips (see `iter_squad_questions`).
  """
  if target not in SQUAD_TARGETS:
    raise DataError(f"config.data.ir.squad_target={target!r}: expected one of {SQUAD_TARGETS}")
  problem = squad_negatives_error(num_negatives, target)
  if problem:
    raise DataError(problem)
  log = _log_or_default(log)
  for q in iter_squad_questions(path, log=log):
    start, end = (0, len(q.context)) if target == "paragraph" else q.answer_sentence
    negatives = []
    if num_negatives:
      others = [clean_text(q.context[s:e]) for s, e in q.sentence_breaks
                if (e <= start or s >= end) and q.context[s:e].strip()]
      if len(others) < num_negatives:
        log.skip(path, f"question {q.id}", TOO_FEW_NEGATIVES,
                 f"{len(others)} other sentences in its paragraph, expected >= {num_negatives} "
                 f"(config.data.ir.num_negatives)")
        log.keep(path, -1)  # iter_squad_questions counted it as kept.
        continue
      rng = np.random.default_rng(zlib.crc32(q.id.encode("utf-8")))
      negatives = [others[i] for i in rng.choice(len(others), num_negatives, replace=False)]
    yield {"query": q.question, "passage": clean_text(q.context[start:end]),
           "negatives": negatives}


@dataclasses.dataclass
class LareqaSet:
  """One language of XQuAD-R / LAReQA: questions and the pool of answer sentences.

  `answer[i]` indexes `sentences` (this language's pool); question ids match across
  languages, so the answers of question `id` in every language are found by id.
  """
  language: str  # From the file name ("en.json" -> "en").
  question_ids: list[str]
  questions: list[str]
  answer: list[int]  # [num_questions] index into `sentences`.
  sentences: list[str]
  sentence_context: list[int]  # [num_sentences] index into `contexts`.
  contexts: list[str]


def _pool_sentences(paragraph: dict, context: str,
                    breaks: Sequence[tuple[int, int]]) -> list[str]:
  """A paragraph's sentences: its `sentences` when they match `breaks` one to one,
  else the context cut at `breaks`."""
  given = paragraph.get("sentences")
  texts = given if given and len(given) == len(breaks) else [context[s:e] for s, e in breaks]
  return [clean_text(t) for t in texts]


def lareqa_language(path) -> str:
  """A LAReQA file's language: its name's stem ("xquad-r/de.json" -> "de")."""
  return os.path.basename(str(path)).split(".")[0]


def read_lareqa(path, *, log: SkipLog | None = None) -> LareqaSet:
  """Reads one XQuAD-R / LAReQA language file (SQuAD JSON with `sentence_breaks`).

  The pool holds every sentence of every paragraph (as given by `sentences`, else
  cut from `sentence_breaks`, else `split_sentences`), including sentences no
  question points to; a question's answer is the sentence whose break contains its
  answer_start.
  """
  log = _log_or_default(log)
  result = LareqaSet(language=lareqa_language(path),
                     question_ids=[], questions=[], answer=[], sentences=[],
                     sentence_context=[], contexts=[])
  first_sentence = {}  # paragraph_index -> index of its first sentence in the pool

  def add_paragraph(index: int, context: str, breaks: Sequence[tuple[int, int]]) -> None:
    first_sentence[index] = len(result.sentences)
    texts = _pool_sentences(paragraphs[index], context, breaks)
    result.contexts.append(context)
    result.sentences.extend(texts)
    result.sentence_context.extend([len(result.contexts) - 1] * len(texts))

  data = load_json(path)["data"]
  paragraphs = [p for a in data for p in a.get("paragraphs", [])]
  for q in _iter_questions(path, data, log=log, require_id=True):
    if q.paragraph_index not in first_sentence:
      add_paragraph(q.paragraph_index, q.context, q.sentence_breaks)
    # The first sentence that overlaps the answer is the answer sentence.
    index = next(n for n, (s, e) in enumerate(q.sentence_breaks)
                 if s == q.answer_sentence[0])
    result.question_ids.append(q.id)
    result.questions.append(q.question)
    result.answer.append(first_sentence[q.paragraph_index] + index)
  # Paragraphs that no usable question refers to still add their sentences to the pool.
  for index, paragraph in enumerate(paragraphs):
    context = paragraph.get("context")
    if index in first_sentence or not isinstance(context, str) or not context.strip():
      continue
    add_paragraph(index, context, _sentence_breaks(paragraph, context))
  return result


# ----------------------------------------------------------------------------
# Line-based text: TSV, aligned pairs, monolingual.


def read_lines(path, log: SkipLog | None = None) -> Iterator[tuple[int, str | None]]:
  """(1-based line number, line without its newline) of a UTF-8 text file.

  Lines are split on "\n" before decoding, so a line that is not UTF-8 is named exactly: with
  a `log` it is a counted `not_utf8` skip (an error when the log is strict) and comes back as
  None (aligned readers keep their alignment); without one it is a DataError.
  """
  with open(path, "rb") as f:
    for line_no, raw in enumerate(f, start=1):  # Binary lines end at b"\n" only.
      try:
        yield line_no, raw.decode("utf-8").rstrip("\r\n")
      except UnicodeDecodeError as e:
        detail = f"{e.reason} at byte {e.start} of the line"
        if log is None:
          raise DataError(f"{path}:{line_no}: not UTF-8 ({detail})") from None
        log.skip(path, line_no, NOT_UTF8, detail)
        yield line_no, None


def _tsv_fields(path, log: SkipLog) -> Iterator[tuple[int, list[str]]]:
  """(line number, tab-separated fields) of each readable line; a first line of column names
  (`is_header`) is a `header` skip."""
  for line_no, line in read_lines(path, log):
    if line is None:
      continue
    fields = line.split("\t")
    if line_no == 1 and is_header(fields):
      log.skip(path, line_no, HEADER, f"column names {fields}")
      continue
    yield line_no, fields


def read_triples(path, *, num_negatives: int = 0,
                 log: SkipLog | None = None) -> Iterator[dict]:
  """IR rows `{"query", "passage", "negatives"}` from a tab-separated file.

  Columns: query, positive passage, then negatives (MS MARCO's triples have one).
  The first `num_negatives` negatives are kept (config.data.ir.num_negatives);
  a row with fewer columns than 2 + num_negatives is a `missing_column` skip, an empty
  field an `empty_text` skip. The format has no header; a first line that is clearly one
  (every field a column name such as query, passage, positive, negative) is a `header` skip.
  """
  log = _log_or_default(log)
  need = 2 + num_negatives
  for line_no, fields in _tsv_fields(path, log):
    if len(fields) < need:
      log.skip(path, line_no, MISSING_COLUMN, f"{len(fields)} columns, expected >= {need}")
      continue
    fields = [clean_text(f) for f in fields[:need]]
    if not all(fields):
      log.skip(path, line_no, EMPTY_TEXT, f"empty column {fields.index('') + 1}")
      continue
    log.keep(path)
    yield {"query": fields[0], "passage": fields[1], "negatives": fields[2:]}
  log.end_file(path)


# Column names that mark a first line as a header in formats that have none.
_HEADER_WORDS = {"query", "queries", "question", "passage", "passages", "positive", "positives",
                 "pos", "negative", "negatives", "neg", "document", "doc", "text", "answer",
                 "context", "hard_negative", "qid", "pid", "id", "query_id", "doc_id",
                 "anchor"}


def is_header(fields: Sequence[str]) -> bool:
  """Whether every field of a line is a column name (query, passage, negative, ...)."""
  names = [re.sub(r"[\s\-]+", "_", f.strip().lower()) for f in fields]
  return len(names) >= 2 and all(re.sub(r"_?\d+$", "", n) in _HEADER_WORDS for n in names)


def _parallel_tsv_header(path, header: str) -> tuple[str, str]:
  fields = header.split("\t")
  if len(fields) != 3 or not all(re.fullmatch(LANGUAGE_CODE, f) for f in fields[1:]):
    raise DataError(f"{path}:1: expected a header 'source<TAB>eng<TAB>xxx' naming the "
                    f"languages (ISO 639-3), got {header[:80]!r}")
  return fields[1], fields[2]


def read_parallel_tsv(path, *, languages: Sequence[str],
                      log: SkipLog | None = None) -> Iterator[dict]:
  """Parallel rows `{"src", "tgt", "src_lang", "tgt_lang"}` from a `source eng xxx` TSV.

  The header's second and third columns name the languages of the text columns
  (src is the second column). When a language is not in `languages`
  (config.data.languages), every row of the file is an `unknown_language` skip.
  Other skips: a line without 3 columns (`missing_column`), an empty text.
  """
  log = _log_or_default(log)
  lines = read_lines(path, log)
  first = next(lines, None)
  if first is None:
    raise DataError(f"{path}: empty file, expected a 'source eng xxx' header")
  if first[1] is None:
    raise DataError(f"{path}:1: the header is not UTF-8; expected 'source<TAB>eng<TAB>xxx'")
  src_code, tgt_code = _parallel_tsv_header(path, first[1])
  src_lang, tgt_lang = language_id(src_code, languages), language_id(tgt_code, languages)
  unknown = [c for c, i in ((src_code, src_lang), (tgt_code, tgt_lang)) if i is None]
  for line_no, line in lines:
    if line is None:
      continue
    if unknown:
      log.skip(path, line_no, UNKNOWN_LANGUAGE,
               f"{unknown} not in config.data.languages={list(languages)}")
      continue
    fields = line.split("\t")
    if len(fields) != 3:
      log.skip(path, line_no, MISSING_COLUMN if len(fields) < 3 else MALFORMED,
               f"{len(fields)} columns, expected 3")
      continue
    src, tgt = clean_text(fields[1]), clean_text(fields[2])
    if not src or not tgt:
      log.skip(path, line_no, EMPTY_TEXT, f"empty {'source' if not src else 'target'}")
      continue
    log.keep(path)
    yield {"src": src, "tgt": tgt, "src_lang": src_lang, "tgt_lang": tgt_lang}
  if unknown:  # Counted and logged above; the whole file is unusable, not broken.
    logging.warning("%s: skipped the whole file: languages %s not in config.data.languages",
                    path, unknown)
    return
  log.end_file(path, "pair")


def iter_aligned_lines(src_path, tgt_path, *,
                       log: SkipLog | None = None) -> Iterator[tuple[int, str, str]]:
  """(line number, src, tgt) of two line-aligned files; a pair with an empty side is skipped.

  Files of different line counts are a `DataError` (the alignment is lost).
  The skips are counted under `src_path`.
  """
  log = _log_or_default(log)
  src_lines, tgt_lines = list(read_lines(src_path, log)), list(read_lines(tgt_path, log))
  if len(src_lines) != len(tgt_lines):
    raise DataError(f"{src_path} has {len(src_lines)} lines but {tgt_path} has "
                    f"{len(tgt_lines)}: expected line-aligned files")
  for (line_no, src), (_, tgt) in zip(src_lines, tgt_lines):
    if src is None or tgt is None:  # Counted by read_lines; the pair goes, the alignment stays.
      continue
    src, tgt = clean_text(src), clean_text(tgt)
    if not src or not tgt:
      log.skip(src_path, line_no, EMPTY_TEXT,
               f"empty line in {src_path if not src else tgt_path}")
      continue
    log.keep(src_path)
    yield line_no, src, tgt
  log.end_file(src_path, "pair")


def parse_aligned_spec(spec: str) -> tuple[tuple[str, str], tuple[str, str]]:
  """((src_code, src_path), (tgt_code, tgt_path)) from a config.data.parallel.paths entry.

  Two forms: "xxx:PATH_A,yyy:PATH_B" (explicit, e.g. FLORES), or a Tatoeba/Moses
  prefix "DIR/tatoeba.xxx-yyy" meaning the files PREFIX.xxx and PREFIX.yyy.
  """
  if "," in spec and ":" in spec:
    parts = [p.split(":", 1) for p in spec.split(",")]
    if len(parts) == 2 and all(len(p) == 2 and p[0] and p[1] for p in parts):
      return tuple(parts[0]), tuple(parts[1])
  match = re.search(r"\.([a-z]{2,3})-([a-z]{2,3})$", spec)
  if match:
    return (match[1], f"{spec}.{match[1]}"), (match[2], f"{spec}.{match[2]}")
  raise DataError(f"config.data.parallel.paths entry {spec!r}: expected 'xxx:PATH,yyy:PATH' "
                  "or a prefix ending in '.xxx-yyy' (files PREFIX.xxx and PREFIX.yyy)")


def read_aligned(spec: str, *, languages: Sequence[str],
                 log: SkipLog | None = None) -> Iterator[dict]:
  """Parallel rows `{"src", "tgt", "src_lang", "tgt_lang"}` from a line-aligned pair.

  `spec` is a config.data.parallel.paths entry (see `parse_aligned_spec`). When a
  language is not in `languages`, every line is an `unknown_language` skip.
  """
  log = _log_or_default(log)
  (src_code, src_path), (tgt_code, tgt_path) = parse_aligned_spec(spec)
  src_lang, tgt_lang = language_id(src_code, languages), language_id(tgt_code, languages)
  unknown = [c for c, i in ((src_code, src_lang), (tgt_code, tgt_lang)) if i is None]
  if unknown:
    for line_no, line in read_lines(src_path, log):
      if line is None:
        continue
      log.skip(src_path, line_no, UNKNOWN_LANGUAGE,
               f"{unknown} not in config.data.languages={list(languages)}")
    return
  for _, src, tgt in iter_aligned_lines(src_path, tgt_path, log=log):
    yield {"src": src, "tgt": tgt, "src_lang": src_lang, "tgt_lang": tgt_lang}


def read_tatoeba(src_path, tgt_path, *,
                 log: SkipLog | None = None) -> tuple[list[str], list[str]]:
  """The aligned sentences (src[i] translates tgt[i]) of a Tatoeba / FLORES pair.

  A pair with an empty side is skipped (counted in `log`), keeping the alignment.
  """
  pairs = list(iter_aligned_lines(src_path, tgt_path, log=log))
  return [p[1] for p in pairs], [p[2] for p in pairs]


def parse_mono_spec(spec: str) -> tuple[str, str]:
  """(language code, path) from a config.data.mono.paths entry "xxx:PATH"."""
  code, sep, path = spec.partition(":")
  if not sep or not re.fullmatch(LANGUAGE_CODE, code) or not path:
    raise DataError(f"config.data.mono.paths entry {spec!r}: expected 'xxx:PATH' "
                    "(ISO 639-3 code, colon, file of one sentence per line)")
  return code, path


def read_mono(spec: str, *, languages: Sequence[str],
              log: SkipLog | None = None) -> Iterator[dict]:
  """Rows `{"text", "lang"}` from "xxx:PATH", one sentence per line; empty lines skipped."""
  log = _log_or_default(log)
  code, path = parse_mono_spec(spec)
  lang = language_id(code, languages)
  for line_no, line in read_lines(path, log):
    if line is None:
      continue
    if lang is None:
      log.skip(path, line_no, UNKNOWN_LANGUAGE,
               f"{code!r} not in config.data.languages={list(languages)}")
      continue
    text = clean_text(line)
    if not text:
      log.skip(path, line_no, EMPTY_TEXT)
      continue
    log.keep(path)
    yield {"text": text, "lang": lang}
  if lang is not None:
    log.end_file(path, "sentence")


# ----------------------------------------------------------------------------
# BEIR folders.


@dataclasses.dataclass
class BeirSet:
  """A BEIR folder: `corpus[doc_id] = {"title", "text"}`, `queries[qid] = text`,
  `qrels[qid] = {doc_id: relevance}` (only queries that have qrels in the split)."""
  corpus: dict[str, dict[str, str]]
  queries: dict[str, str]
  qrels: dict[str, dict[str, int]]


def json_lines(path, log: SkipLog) -> Iterator[tuple[int, dict]]:
  """(line number, object) of each line of a JSONL file that is a JSON object.

  An empty line is an `empty_text` skip; a line that is not JSON, or not an object, `malformed`.
  """
  for line_no, line in read_lines(path, log):
    if line is None:
      continue
    if not line.strip():
      log.skip(path, line_no, EMPTY_TEXT, "empty line")
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      log.skip(path, line_no, MALFORMED, f"not JSON: {e.msg}")
      continue
    if not isinstance(record, dict):
      log.skip(path, line_no, MALFORMED, f"a JSON {type(record).__name__}, expected an object")
      continue
    yield line_no, record


def _read_jsonl(path, log: SkipLog, text_keys: Sequence[str]) -> Iterator[tuple[str, dict]]:
  """(`_id`, record) of a BEIR jsonl file; a record without `_id` or text is skipped."""
  for line_no, record in json_lines(path, log):
    if "_id" not in record:
      log.skip(path, line_no, MISSING_COLUMN, "no '_id'")
      continue
    if not any(str(record.get(k) or "").strip() for k in text_keys):
      log.skip(path, line_no, EMPTY_TEXT, f"no {' or '.join(text_keys)}")
      continue
    log.keep(path)
    yield str(record["_id"]), record


def beir_passage(doc: dict) -> str:
  """A BEIR document as one passage: "title text" (the title only when present)."""
  title, text = str(doc.get("title") or "").strip(), str(doc.get("text") or "").strip()
  return f"{title} {text}" if title and text else (title or text)


def read_beir(folder, *, split: str = "test", log: SkipLog | None = None) -> BeirSet:
  """Reads a BEIR folder: corpus.jsonl, queries.jsonl, qrels/{split}.tsv.

  qrels rows are `query-id<TAB>corpus-id<TAB>score` after a header; a row naming an
  unknown query or document is an `unknown_id` skip, a bad score `malformed`.
  """
  log = _log_or_default(log)
  folder = os.fspath(folder)
  qrels_path = os.path.join(folder, "qrels", f"{split}.tsv")
  for name in ("corpus.jsonl", "queries.jsonl"):
    if not os.path.exists(os.path.join(folder, name)):
      raise DataError(f"{folder}: not a BEIR folder, {name} is missing")
  if not os.path.exists(qrels_path):
    have = sorted(os.listdir(os.path.join(folder, "qrels"))) if os.path.isdir(
        os.path.join(folder, "qrels")) else []
    raise DataError(f"{qrels_path} not found (split {split!r}); qrels/ has {have}")
  corpus_path, queries_path = os.path.join(folder, "corpus.jsonl"), os.path.join(folder, "queries.jsonl")
  corpus = {i: {"title": str(r.get("title") or ""), "text": str(r.get("text") or "")}
            for i, r in _read_jsonl(corpus_path, log, ("title", "text"))}
  log.end_file(corpus_path, "document")
  queries = {i: str(r["text"]).strip() for i, r in _read_jsonl(queries_path, log, ("text",))}
  log.end_file(queries_path, "query")
  qrels = collections.defaultdict(dict)
  for line_no, line in read_lines(qrels_path, log):
    if line is None:
      continue
    fields = line.split("\t")
    if line_no == 1 and fields[0] == "query-id":
      continue  # The header.
    if len(fields) < 3:
      log.skip(qrels_path, line_no, MISSING_COLUMN, f"{len(fields)} columns, expected 3")
      continue
    qid, doc_id, score = fields[0].strip(), fields[1].strip(), fields[2].strip()
    if not re.fullmatch(r"-?\d+", score):
      log.skip(qrels_path, line_no, MALFORMED, f"score {score!r} is not an integer")
      continue
    if qid not in queries or doc_id not in corpus:
      log.skip(qrels_path, line_no, UNKNOWN_ID,
               f"query {qid!r}" if qid not in queries else f"document {doc_id!r}")
      continue
    log.keep(qrels_path)
    qrels[qid][doc_id] = int(score)
  log.end_file(qrels_path, "judgement")
  return BeirSet(corpus=corpus, queries=queries, qrels=dict(qrels))


def read_beir_pairs(folder, *, split: str = "train",
                    log: SkipLog | None = None) -> Iterator[dict]:
  """IR rows `{"query", "passage"}` for each (query, document) of qrels score > 0.

  Only the pairs yielded count as rows (under `folder`); the documents, queries and
  judgements read on the way add only their skips to `log`. A folder without a
  positive judgement is a `DataError`.
  """
  log = _log_or_default(log)
  read_log = SkipLog(strict=log.strict)  # Its skips are logged already; copied below.
  beir = read_beir(folder, split=split, log=read_log)
  for path, counts in read_log.skipped.items():
    log.skipped[path].update(counts)
  for qid, docs in beir.qrels.items():
    for doc_id, score in docs.items():
      if score > 0:
        log.keep(folder)
        yield {"query": beir.queries[qid], "passage": beir_passage(beir.corpus[doc_id]),
               "negatives": []}
  log.end_file(folder, "positive qrels pair")


# ----------------------------------------------------------------------------
# JSONL IR: {"query", "pos", "neg"} (FlagEmbedding, sentence-transformers).


def _texts_field(record: dict, key: str) -> list | None:
  """record[key] as a list of texts (a lone string is a list of one); None when not texts."""
  value = record.get(key)
  if isinstance(value, str):
    value = [value]
  if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
    return None
  return [clean_text(t) for t in value]


def read_ir_jsonl(path, *, num_negatives: int = 0,
                  log: SkipLog | None = None) -> Iterator[dict]:
  """IR rows `{"query", "passage", "negatives"}` from JSONL `{"query", "pos", "neg"}` lines.

  The format FlagEmbedding and sentence-transformers users train with (and what
  `python -m lair.mine` writes): "query" a string, "pos" a list of positive passages, "neg" a
  list of negatives, hardest first (a lone string counts as a list of one; other keys, such as
  "pos_scores" or "prompt", are ignored). Each positive gives one row, with the first
  `num_negatives` negatives (config.data.ir.num_negatives; "neg" may be absent when it is 0).

  Skips: an empty or non-JSON line, a line that is not an object (`malformed`); no "query" or
  "pos", or one that is not text (`missing_column`); an empty query or no positive, or an
  empty text among the positives or the negatives used (`empty_text`); fewer than
  `num_negatives` negatives (`too_few_negatives`, as the triples reader's short rows).
  """
  log = _log_or_default(log)
  for line_no, record in json_lines(path, log):
    query, positives = record.get("query"), _texts_field(record, "pos")
    if not isinstance(query, str) or positives is None:
      missing = "query" if not isinstance(query, str) else "pos"
      log.skip(path, line_no, MISSING_COLUMN, f"no {missing!r} text (expected \"query\": str, "
               f"\"pos\": [str], \"neg\": [str])")
      continue
    query = clean_text(query)
    if not query or not positives or not all(positives):
      what = ("empty query" if not query else "no positive" if not positives
              else "an empty positive")
      log.skip(path, line_no, EMPTY_TEXT, what)
      continue
    negatives = []
    if num_negatives:
      negatives = _texts_field(record, "neg")
      if negatives is None and "neg" in record:
        log.skip(path, line_no, MISSING_COLUMN, "'neg' is not a list of texts")
        continue
      negatives = (negatives or [])[:num_negatives]
      if len(negatives) < num_negatives:
        log.skip(path, line_no, TOO_FEW_NEGATIVES,
                 f"{len(negatives)} negatives, expected >= {num_negatives} "
                 f"(config.data.ir.num_negatives)")
        continue
      if not all(negatives):
        log.skip(path, line_no, EMPTY_TEXT, "an empty negative")
        continue
    log.keep(path)
    for passage in positives:
      yield {"query": query, "passage": passage, "negatives": list(negatives)}
  log.end_file(path)


IR_FORMATS = ("squad", "triples", "beir", "jsonl")
# Formats whose rows can carry negatives (config.data.ir.num_negatives > 0).
IR_FORMATS_WITH_NEGATIVES = ("squad", "triples", "jsonl")


def read_ir(path, *, format: str,  # pylint: disable=redefined-builtin
            squad_target: str = "sentence", num_negatives: int = 0,
            log: SkipLog | None = None) -> Iterator[dict]:
  """IR rows `{"query", "passage", "negatives"}` of one config.data.ir.paths entry.

  `format` is config.data.ir.format (IR_FORMATS); BEIR folders give their "train" qrels.
  """
  if format == "squad":
    return read_squad(path, target=squad_target, num_negatives=num_negatives, log=log)
  if format == "triples":
    return read_triples(path, num_negatives=num_negatives, log=log)
  if format == "beir":
    return read_beir_pairs(path, split="train", log=log)
  if format == "jsonl":
    return read_ir_jsonl(path, num_negatives=num_negatives, log=log)
  raise DataError(f"config.data.ir.format={format!r}: expected one of {IR_FORMATS}")


# ----------------------------------------------------------------------------
# Corpora to index: documents {"id", "text", "lang"}.

CORPUS_FORMATS = ("auto", "jsonl", "tsv", "lines")


def parse_corpus_spec(spec: str) -> tuple[str, str]:
  """(language code or "", path) of a corpus entry: "PATH", or "xxx:PATH" for its language."""
  spec = os.fspath(spec)
  code, sep, path = spec.partition(":")
  if sep and re.fullmatch(LANGUAGE_CODE, code) and path and not os.path.exists(spec):
    return code, path
  return "", spec


def corpus_format(path: str, format: str = "auto") -> str:  # pylint: disable=redefined-builtin
  """The format a corpus file is read in: "beir" (a folder), "jsonl", "tsv" or "lines".

  "auto" goes by the name: a folder is a BEIR folder (its corpus.jsonl), `.jsonl` / `.json`
  JSONL, `.tsv` TSV, anything else one document per line.
  """
  if format not in CORPUS_FORMATS:
    raise DataError(f"corpus format {format!r}: expected one of {CORPUS_FORMATS}")
  if os.path.isdir(path):
    return "beir"
  if format != "auto":
    return format
  name = str(path).lower()
  if name.endswith((".jsonl", ".json")):
    return "jsonl"
  return "tsv" if name.endswith(".tsv") else "lines"


def _corpus_jsonl(path, language: str, log: SkipLog) -> Iterator[tuple[int, dict]]:
  """Documents of a JSONL corpus: `{"id" or "_id", "text", "title"?, "lang" or "language"?}`."""
  for line_no, record in json_lines(path, log):
    doc_id = record.get("id", record.get("_id"))
    if doc_id is None or not str(doc_id).strip():
      log.skip(path, line_no, MISSING_COLUMN, "no 'id' (or BEIR's '_id')")
      continue
    if not isinstance(record.get("text", ""), str) or not isinstance(record.get("title", ""),
                                                                      str):
      log.skip(path, line_no, MALFORMED, "'text' and 'title' must be strings")
      continue
    text = clean_text(beir_passage(record))
    if not text:
      log.skip(path, line_no, EMPTY_TEXT, "no 'text' (or 'title')")
      continue
    lang = record.get("lang", record.get("language")) or language
    yield line_no, {"id": str(doc_id).strip(), "text": text, "lang": str(lang)}


def _corpus_tsv(path, language: str, log: SkipLog) -> Iterator[tuple[int, dict]]:
  """Documents of an `id<TAB>text` file (MS MARCO's collection.tsv); a header line is skipped."""
  for line_no, fields in _tsv_fields(path, log):
    if len(fields) != 2:
      log.skip(path, line_no, MISSING_COLUMN if len(fields) < 2 else MALFORMED,
               f"{len(fields)} columns, expected 2: id<TAB>text")
      continue
    doc_id, text = fields[0].strip(), clean_text(fields[1])
    if not doc_id or not text:
      log.skip(path, line_no, EMPTY_TEXT, "empty id" if not doc_id else "empty text")
      continue
    yield line_no, {"id": doc_id, "text": text, "lang": language}


def _corpus_lines(path, language: str, log: SkipLog) -> Iterator[tuple[int, dict]]:
  """One document per line, whose id is "FILE_NAME:LINE" (unique across files of other names)."""
  name = os.path.basename(str(path))
  for line_no, line in read_lines(path, log):
    if line is None:
      continue
    text = clean_text(line)
    if not text:
      log.skip(path, line_no, EMPTY_TEXT, "empty line")
      continue
    yield line_no, {"id": f"{name}:{line_no}", "text": text, "lang": language}


_CORPUS_READERS = {"jsonl": _corpus_jsonl, "tsv": _corpus_tsv, "lines": _corpus_lines}


def read_corpus(specs, *, format: str = "auto",  # pylint: disable=redefined-builtin
                language: str = "", log: SkipLog | None = None) -> Iterator[dict]:
  """Documents `{"id", "text", "lang"}` of corpus files, in order, ids unique.

  Args:
    specs: a path or a list of them; "xxx:PATH" gives the documents of PATH the language xxx.
      A folder is a BEIR folder (its corpus.jsonl: "title text").
    format: "auto" (by the name, see `corpus_format`), "jsonl", "tsv" (`id<TAB>text`) or
      "lines" (one document per line, id "FILE_NAME:LINE").
    language: the language of documents that name none ("" when unknown).
    log: counts the skips. Beside each format's own (malformed, missing_column, empty_text,
      header), a document whose id an earlier one has is a `duplicate_id` skip.
  """
  log = _log_or_default(log)
  seen = {}  # id -> "file:line" of its first document
  for spec in [specs] if isinstance(specs, (str, os.PathLike)) else list(specs):
    spec_language, path = parse_corpus_spec(spec)
    kind = corpus_format(path, format)
    if kind == "beir":
      path = os.path.join(path, "corpus.jsonl")
      kind = "jsonl"
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path}: corpus file not found")
    for line_no, doc in _CORPUS_READERS[kind](path, spec_language or language, log):
      if doc["id"] in seen:
        log.skip(path, line_no, DUPLICATE_ID, f"id {doc['id']!r} is already {seen[doc['id']]}")
        continue
      seen[doc["id"]] = f"{path}:{line_no}"
      log.keep(path)
      yield doc
    log.end_file(path, "document")
