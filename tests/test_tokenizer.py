"""lair.tokenizer: BERT WordPiece trained on the fly, round-tripping through HF formats."""
import json
import pathlib
import subprocess
import sys
import unicodedata

import pytest
import transformers

from lair import tokenizer as lair_tokenizer

REPO = pathlib.Path(__file__).resolve().parents[1]
CORPUS = REPO / "lair" / "data" / "quickstart"
TRAIN_FILES = [str(CORPUS / "train.squad.json")] + [
    str(CORPUS / f"parallel.eng-{lang}.tsv") for lang in ("deu", "spa", "fra")]

# Held-out text (not in the training files): accents, punctuation, unseen names, numbers.
SENTENCES = [
    "Quel animal Elsa Balino a-t-elle ?",
    "¿Qué mascota tiene Hugo Torak?",
    "Die beste Freundin von Leon Novunt ist Ida Kalo.",
    "Ce qu'Olivia préfère manger, c'est la tarte aux pommes.",
    "ÉTÉ, été, ete: Straße 1984!",
    "Zyxwvut qqq",
]


@pytest.fixture(scope="module")
def trained():
  return lair_tokenizer.train_tokenizer(TRAIN_FILES, 1000)  # Fewer than all merges.


def _is_punctuation(char):
  return (char.isascii() and not char.isalnum() and not char.isspace()) or \
      unicodedata.category(char).startswith("P")


def reference_wordpiece(text, vocab, max_chars=100):
  """BERT's uncased-without-accent-stripping tokenisation, written from its description:
  lowercase, split on whitespace and around every punctuation character, then greedy
  longest-match-first WordPiece with '##' continuations; an unsplittable word is [UNK]."""
  words = []
  for chunk in text.lower().split():
    word = ""
    for char in chunk:
      if _is_punctuation(char):
        words += [word, char] if word else [char]
        word = ""
      else:
        word += char
    if word:
      words.append(word)
  pieces = []
  for word in words:
    start, word_pieces = 0, []
    while start < len(word) and len(word) <= max_chars:
      end = len(word)
      while end > start:
        piece = ("##" if start else "") + word[start:end]
        if piece in vocab:
          break
        end -= 1
      if end == start:
        break
      word_pieces.append(piece)
      start = end
    pieces += word_pieces if start == len(word) else ["[UNK]"]
  return ["[CLS]"] + pieces + ["[SEP]"]


def test_special_tokens_take_the_bert_ids(trained):
  assert [trained.convert_tokens_to_ids(t) for t in
          ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 1, 2, 3, 4]
  assert (trained.pad_token_id, trained.unk_token_id, trained.cls_token_id,
          trained.sep_token_id, trained.mask_token_id) == (0, 1, 2, 3, 4)
  batch = trained(SENTENCES[:2], padding=True)
  short, long_ = sorted(batch["input_ids"], key=lambda ids: ids.count(0), reverse=True)
  mask = batch["attention_mask"][batch["input_ids"].index(short)]
  n = sum(mask)
  assert short[0] == 2 and short[n - 1] == 3 and set(short[n:]) == {0}
  assert long_[0] == 2 and long_[-1] == 3 and 0 not in long_
  assert 2 not in short[1:n - 1] and 3 not in short[1:n - 1]
  truncated = trained(SENTENCES[2], truncation=True, max_length=6)["input_ids"]
  assert len(truncated) == 6 and truncated[0] == 2 and truncated[-1] == 3
  assert truncated[1:5] == trained(SENTENCES[2])["input_ids"][1:5]
  pair = trained("Wo wohnt Ida?", "Ida wohnt in Tolven.")["input_ids"]
  assert pair[0] == 2 and pair.count(3) == 2 and pair[-1] == 3


def test_tokens_match_a_reference_wordpiece(trained):
  vocab = trained.get_vocab()
  for sentence in SENTENCES:
    ids = trained(sentence)["input_ids"]
    assert trained.convert_ids_to_tokens(ids) == reference_wordpiece(sentence, vocab), sentence


def test_lowercases_but_keeps_accents(trained):
  ids = lambda text: trained(text)["input_ids"]
  assert ids("ÉTÉ Haus") == ids("été haus")
  assert ids("été") != ids("ete")
  assert "préfère" in trained.get_vocab()


def test_save_pretrained_round_trips_through_auto_tokenizer(trained, tmp_path):
  trained.save_pretrained(tmp_path)
  loaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
  for kwargs in ({}, {"padding": "max_length", "max_length": 40, "truncation": True}):
    assert loaded(SENTENCES, **kwargs)["input_ids"] == trained(SENTENCES, **kwargs)["input_ids"]
  assert loaded.get_vocab() == trained.get_vocab()
  assert (loaded.pad_token_id, loaded.cls_token_id, loaded.sep_token_id) == (0, 2, 3)
  assert loaded.model_max_length == 512


def test_out_dir_is_saved_and_loads_with_sentence_transformers(tmp_path):
  """A BERT directory with this tokenizer is what lair's HF export writes."""
  sentence_transformers = pytest.importorskip("sentence_transformers")
  tokenizer = lair_tokenizer.train_tokenizer(TRAIN_FILES[:2], 500, out_dir=str(tmp_path))
  assert (tmp_path / "tokenizer.json").exists()
  config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=16,
                                   num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32)
  transformers.BertModel(config).save_pretrained(tmp_path)
  model = sentence_transformers.SentenceTransformer(str(tmp_path), device="cpu")
  features = model.tokenize(SENTENCES[:3])
  assert features["input_ids"].tolist() == tokenizer(SENTENCES[:3], padding=True)["input_ids"]
  assert model.encode(SENTENCES[:3]).shape == (3, 16)


def test_training_is_deterministic_across_processes(trained):
  code = ("import json, sys; from lair import tokenizer as t; "
          "print(json.dumps(t.train_tokenizer(sys.argv[1:], 1000).get_vocab(), sort_keys=True))")
  proc = subprocess.run([sys.executable, "-c", code, *TRAIN_FILES], cwd=REPO,
                        capture_output=True, text=True, check=True)
  assert json.loads(proc.stdout.splitlines()[-1]) == trained.get_vocab()
  again = lair_tokenizer.train_tokenizer(TRAIN_FILES, 1000)
  assert again.get_vocab() == trained.get_vocab()


def test_corpus_texts_reads_each_format(tmp_path):
  squad = {"data": [{"title": "t", "paragraphs": [
      {"context": "A b c.", "qas": [{"id": "1", "question": "Q?", "answers": []}]}]}],
           "version": "1.1"}
  (tmp_path / "s.json").write_text(json.dumps(squad), encoding="utf-8")
  (tmp_path / "p.tsv").write_text("source\teng\tdeu\nsub\tHello.\tHallo.\n", encoding="utf-8")
  (tmp_path / "t.tsv").write_text("query\tpositive\n", encoding="utf-8")
  (tmp_path / "m.txt").write_text("Eins.\n\nZwei.\n", encoding="utf-8")
  texts = list(lair_tokenizer.corpus_texts(
      [tmp_path / "s.json", tmp_path / "p.tsv", tmp_path / "t.tsv",
       f"deu:{tmp_path / 'm.txt'}"]))
  assert texts == ["A b c.", "Q?", "Hello.", "Hallo.", "query", "positive", "Eins.", "Zwei."]


def test_bad_inputs_name_what_is_wrong(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.tokenizer.train_files.*missing.txt"):
    lair_tokenizer.train_tokenizer([str(tmp_path / "missing.txt")], 100)
  (tmp_path / "empty.txt").write_text("\n  \n", encoding="utf-8")
  with pytest.raises(ValueError, match="no text to train on"):
    lair_tokenizer.train_tokenizer([str(tmp_path / "empty.txt")], 100)
  with pytest.raises(ValueError, match="config.tokenizer.vocab_size=3"):
    lair_tokenizer.train_tokenizer(texts=["a b"], vocab_size=3)
