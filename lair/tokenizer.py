"""WordPiece tokenizers trained on the fly, for encoders trained from scratch.

`train_tokenizer` learns a BERT-style WordPiece vocabulary with the `tokenizers` library
and wraps it as a `transformers` fast tokenizer, so that `save_pretrained(dir)` and
`AutoTokenizer.from_pretrained(dir)` round-trip it exactly (the whole pipeline lives in
`tokenizer.json`), and an exported BERT directory loads in transformers and
sentence-transformers.

The pipeline suits multilingual text: Unicode clean-up and lowercasing but *no* accent
stripping (which would merge "été" with "ete" and mangle scripts whose marks carry
meaning), BERT pre-tokenisation (split on whitespace and punctuation, CJK characters
apart), WordPiece with `##` continuations, and `[CLS] ... [SEP]` around every text.
Special tokens take the first ids: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4.

Training is deterministic: the same texts in the same order give the same vocabulary.
"""
import os
import re
from typing import Iterable, Iterator, Sequence

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import trainers
import transformers

from lair.data import readers

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)  # In id order.

# The header of a `source eng xxx` parallel TSV (see lair/data/readers.py).
_PARALLEL_HEADER = re.compile(rf"[^\t]*\t{readers.LANGUAGE_CODE}\t{readers.LANGUAGE_CODE}")


def _squad_texts(path: str) -> Iterator[str]:
  """Contexts and questions of a SQuAD-format JSON file."""
  for article in readers.load_json(path)["data"]:
    for paragraph in article.get("paragraphs", []):
      yield paragraph.get("context") or ""
      for qa in paragraph.get("qas", []):
        yield qa.get("question") or ""


def _lines(path: str) -> Iterator[str]:
  """The lines of a UTF-8 text file, read as the training readers read them."""
  return (line for _, line in readers.read_lines(path))


def _tsv_texts(path: str) -> Iterator[str]:
  """Text columns of a TSV: after the first (the sub-corpus) in a `source eng xxx` file,
  else every column (e.g. query, positive, negative triples)."""
  lines = _lines(path)
  first = next(lines, "")
  parallel = bool(_PARALLEL_HEADER.fullmatch(first))
  if not parallel:
    yield from first.split("\t")
  for line in lines:
    yield from line.split("\t")[1 if parallel else 0:]


def _resolve(path) -> str:
  """`path` itself, or the file of a monolingual spec "xxx:PATH"."""
  path = os.fspath(path)
  if os.path.isfile(path):
    return path
  try:
    _, mono_path = readers.parse_mono_spec(path)
  except readers.DataError:
    mono_path = None
  if mono_path and os.path.isfile(mono_path):
    return mono_path
  raise FileNotFoundError(f"config.tokenizer.train_files: {path!r} is not a file")


def corpus_texts(files: Sequence) -> Iterator[str]:
  """Every non-empty text of `files`, in order, read by format.

  `.json`: SQuAD JSON (contexts and questions); `.tsv`: tab-separated text columns
  (a `source eng xxx` parallel file without its header and sub-corpus column); anything
  else: one text per line. An entry may also be a monolingual spec "xxx:PATH".
  """
  for path in map(_resolve, files):
    if path.endswith(".json"):
      texts = _squad_texts(path)
    elif path.endswith(".tsv"):
      texts = _tsv_texts(path)
    else:
      texts = _lines(path)
    for text in texts:
      if text.strip():
        yield text


def _untrained_tokenizer() -> Tokenizer:
  """The WordPiece pipeline before training: normaliser, pre-tokeniser, decoder."""
  tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
  tokenizer.normalizer = normalizers.BertNormalizer(
      clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=True)
  tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tokenizer.decoder = decoders.WordPiece(prefix="##")
  return tokenizer


def _trained_wordpiece(corpus: Sequence[str], vocab_size: int) -> Tokenizer:
  """The WordPiece pipeline with a vocabulary learned from `corpus`, deterministically.

  `tokenizers`' trainer gives the `##c` continuation pieces ids in hash-map order, and
  breaks ties between equally frequent merges by id, so the vocabulary can change from
  run to run (huggingface/tokenizers#1794). Declaring every `##c` up front, in sorted
  order, fixes their ids; they are declared as special tokens only for training, and the
  returned tokenizer has just the five real ones.
  """
  tokenizer = _untrained_tokenizer()
  chars = set()
  for text in corpus:
    chars.update(tokenizer.normalizer.normalize_str(text))
  continuations = ["##" + c for c in sorted(chars) if not c.isspace()]
  trainer = trainers.WordPieceTrainer(
      vocab_size=vocab_size, special_tokens=[*SPECIAL_TOKENS, *continuations],
      show_progress=False, continuing_subword_prefix="##")
  tokenizer.train_from_iterator(corpus, trainer)
  vocab = tokenizer.get_vocab(with_added_tokens=False)
  tokenizer = _untrained_tokenizer()
  tokenizer.model = models.WordPiece(vocab, unk_token=UNK, continuing_subword_prefix="##")
  tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
  return tokenizer


def train_tokenizer(files: Sequence = (), vocab_size: int = 8000, out_dir: str | None = None,
                    *, texts: Iterable[str] = (), model_max_length: int = 512
                    ) -> transformers.PreTrainedTokenizerFast:
  """Trains a WordPiece tokenizer on `files` (see `corpus_texts`) and then `texts`.

  Args:
    files: corpus files (config.tokenizer.train_files), read in order.
    vocab_size: the most pieces to learn, special tokens and alphabet included; a
      small corpus can end with fewer (every merge used), and the alphabet (each
      character alone and as `##c`) is kept whole even when larger. Use
      `len(tokenizer)` for the model's vocabulary size.
    out_dir: when given, the tokenizer is also saved there (`save_pretrained`).
    texts: more training texts, after those of `files`.
    model_max_length: the longest input, in tokens, that the model accepts.

  Returns:
    A fast tokenizer: `tokenizer(batch, padding=..., truncation=True, max_length=L)`
    gives `input_ids` with `[CLS] ... [SEP]` and `attention_mask`; pad id 0.
  """
  if vocab_size <= len(SPECIAL_TOKENS):
    raise ValueError(f"config.tokenizer.vocab_size={vocab_size}: expected more than "
                     f"the {len(SPECIAL_TOKENS)} special tokens")
  corpus = [*corpus_texts(files), *(t for t in texts if t.strip())]
  if not corpus:
    raise ValueError(f"config.tokenizer.train_files={list(files)!r}: no text to train on")
  tokenizer = _trained_wordpiece(corpus, vocab_size)
  ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
  assert list(ids.values()) == list(range(len(SPECIAL_TOKENS))), ids
  tokenizer.post_processor = processors.TemplateProcessing(
      single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
      special_tokens=[(CLS, ids[CLS]), (SEP, ids[SEP])])
  wrapped = transformers.PreTrainedTokenizerFast(
      tokenizer_object=tokenizer, unk_token=UNK, pad_token=PAD, cls_token=CLS,
      sep_token=SEP, mask_token=MASK, model_max_length=model_max_length)
  if out_dir:
    wrapped.save_pretrained(out_dir)
  return wrapped
