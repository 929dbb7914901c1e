"""The quickstart corpus: reproducible from its script, valid in every format it claims."""
import collections
import filecmp
import importlib.util
import json
import pathlib
import re
import subprocess
import sys

from lair.data import readers

REPO = pathlib.Path(__file__).resolve().parents[1]
CORPUS = REPO / "lair" / "data" / "quickstart"
SCRIPT = REPO / "scripts" / "make_quickstart_corpus.py"
LANGS = ("eng", "deu", "spa", "fra")
FOREIGN = LANGS[1:]


def load_json(name):
  with open(CORPUS / name, encoding="utf-8") as f:
    return json.load(f)


def _paragraphs(data):
  return [p for article in data["data"] for p in article["paragraphs"]]


def _generator():
  spec = importlib.util.spec_from_file_location("make_quickstart_corpus", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_script_regenerates_the_committed_files_byte_for_byte(tmp_path):
  proc = subprocess.run([sys.executable, str(SCRIPT), "--out_dir", str(tmp_path)],
                        capture_output=True, text=True, check=True)
  assert "wrote" in proc.stdout
  committed = sorted(p.name for p in CORPUS.iterdir() if p.name != "README.md")
  assert sorted(p.name for p in tmp_path.iterdir()) == committed
  match, mismatch, errors = filecmp.cmpfiles(CORPUS, tmp_path, committed, shallow=False)
  assert (mismatch, errors) == ([], [])
  assert len(match) == 18


def test_corpus_is_small():
  total = sum(p.stat().st_size for p in CORPUS.iterdir())
  assert total < 1.6e6


def test_templates_render_hand_checked_grammar():
  """A few renderings written out by hand: gender agreement, articles, French elision."""
  gen = _generator()
  jobs = [j[0] for j in gen.JOBS]
  instruments = [i[0] for i in gen.INSTRUMENTS]
  pets = [p[0] for p in gen.PETS]
  foods = [f[0] for f in gen.FOODS]
  elsa = gen.Person(name="Elsa Balino", gender="f", town="Tolven", job=jobs.index("engineer"),
                    year=1980, instrument=instruments.index("the accordion"),
                    pet=pets.index("a donkey"), food=foods.index("apple pie"),
                    friend="Ida Kalo", friend_gender="f")
  hugo = gen.Person(name="Hugo Torak", gender="m", town="Brask", job=jobs.index("teacher"),
                    year=1999, instrument=instruments.index("the drums"),
                    pet=pets.index("a goat"), food=foods.index("rice"),
                    friend="Ida Kalo", friend_gender="f")
  expected = [
      (elsa, "job", 0, "eng", "Elsa Balino works as an engineer.", "engineer"),
      (hugo, "job", 1, "eng", "Hugo Torak is a teacher by profession.", "teacher"),
      (elsa, "job", 0, "deu", "Elsa Balino arbeitet als Ingenieurin.", "Ingenieurin"),
      (elsa, "pet", 1, "deu", "Elsa Balino hält einen Esel als Haustier.", "Esel"),
      (hugo, "pet", 0, "deu", "Hugo Torak hat eine Ziege.", "Ziege"),
      (elsa, "friend", 0, "deu", "Die beste Freundin von Elsa Balino ist Ida Kalo.", "Ida Kalo"),
      (hugo, "friend", 1, "deu",
       "Hugo Torak und Ida Kalo sind seit der Schulzeit beste Freunde.", "Ida Kalo"),
      (elsa, "friend", 1, "spa",
       "Elsa Balino y Ida Kalo son mejores amigas desde la escuela.", "Ida Kalo"),
      (hugo, "instrument", 0, "spa", "Hugo Torak toca la batería.", "batería"),
      (elsa, "food", 0, "spa", "La comida favorita de Elsa Balino es la tarta de manzana.",
       "tarta de manzana"),
      (elsa, "year", 0, "fra", "Elsa Balino est née en 1980.", "1980"),
      (hugo, "year", 1, "fra", "Hugo Torak est venu au monde en 1999.", "1999"),
      (elsa, "food", 1, "fra", "Ce qu'Elsa Balino préfère manger, c'est la tarte aux pommes.",
       "tarte aux pommes"),
      (elsa, "instrument", 0, "fra", "Elsa Balino joue de l'accordéon.", "accordéon"),
      (hugo, "town", 0, "fra", "Hugo Torak habite à Brask.", "Brask"),
  ]
  for person, fact, template, lang, sentence, answer in expected:
    got, offset, got_answer = gen.statement(person, fact, template, lang)
    assert (got, got_answer) == (sentence, answer)
    assert sentence.index(answer) == offset
  assert gen.question(elsa, "year", 1, "fra") == "En quelle année Elsa Balino est-elle née ?"
  assert gen.question(elsa, "job", 1, "fra") == "Quel est le métier d'Elsa Balino ?"
  assert gen.question(hugo, "food", 1, "spa") == "¿Qué es lo que más le gusta comer a Hugo Torak?"
  assert gen.question(hugo, "job", 0, "deu") == "Was macht Hugo Torak beruflich?"


def _check_squad(data):
  """SQuAD v1.1: answers are spans of their context; ids unique. Returns the qas."""
  assert data["version"] == "1.1"
  qas = []
  for paragraph in _paragraphs(data):
    context = paragraph["context"]
    for qa in paragraph["qas"]:
      assert qa["question"].strip()
      for answer in qa["answers"]:
        start, text = answer["answer_start"], answer["text"]
        assert context[start:start + len(text)] == text, (qa["id"], text)
      qas.append(qa)
  assert len({qa["id"] for qa in qas}) == len(qas)
  return qas


def test_training_squad_is_english_squad_v11():
  data = load_json("train.squad.json")
  qas = _check_squad(data)
  assert 1000 <= len(qas) <= 2000
  for paragraph in _paragraphs(data):
    assert set(paragraph) == {"context", "qas"}
    # English text only: no letters outside ASCII.
    assert re.fullmatch(r"[\x20-\x7e]+", paragraph["context"])


def test_training_squad_reads_without_skips():
  """Through the project's SQuAD reader: every question usable, answer in its sentence."""
  log = readers.SkipLog(strict=True)
  questions = list(readers.iter_squad_questions(CORPUS / "train.squad.json", log=log))
  assert len(questions) == len(_check_squad(load_json("train.squad.json")))
  for q in questions[:200]:
    sentence = q.context[slice(*q.answer_sentence)]
    assert sentence.endswith(".") and sentence.count(". ") == 0


def test_lareqa_sets_are_aligned_across_languages():
  sets = {lang: load_json(f"{lang}.lareqa.json") for lang in LANGS}
  answer_sentences = {}
  for lang, data in sets.items():
    _check_squad(data)
    located = []
    for paragraph in _paragraphs(data):
      context, sentences, breaks = (paragraph["context"], paragraph["sentences"],
                                    paragraph["sentence_breaks"])
      assert len(sentences) == len(breaks)
      for (start, end), sentence in zip(breaks, sentences):
        assert context[start:end] == sentence
      # Breaks are in order and cover the context but single spaces between sentences.
      assert breaks[0][0] == 0 and breaks[-1][1] == len(context)
      for (_, end), (start, _) in zip(breaks, breaks[1:]):
        assert context[end:start] == " "
      for qa in paragraph["qas"]:
        start = qa["answers"][0]["answer_start"]
        index = [n for n, (s, e) in enumerate(breaks) if s <= start < e]
        assert len(index) == 1
        located.append((qa["id"], index[0], len(sentences)))
    answer_sentences[lang] = located
  # Same question ids, in the same order, answered by the same sentence of the same
  # paragraph, in every language.
  for lang in FOREIGN:
    assert answer_sentences[lang] == answer_sentences["eng"]
  assert len(answer_sentences["eng"]) >= 150


def test_lareqa_sets_have_the_real_xquad_r_structure(shared_data):
  """Key sets and value types at every level match the real XQuAD-R files."""
  def shape(data):
    paragraph = _paragraphs(data)[0]
    qa = paragraph["qas"][0]
    return (sorted(data), sorted(data["data"][0]), sorted(paragraph), sorted(qa),
            sorted(qa["answers"][0]), type(paragraph["sentence_breaks"][0]),
            type(paragraph["sentence_breaks"][0][0]), type(qa["answers"][0]["answer_start"]))

  with open(shared_data / "xquad-r" / "en.json", encoding="utf-8") as f:
    real = shape(json.load(f))
  for lang in LANGS:
    assert shape(load_json(f"{lang}.lareqa.json")) == real


def test_lareqa_sets_read_through_the_project_reader():
  for lang in LANGS:
    result = readers.read_lareqa(CORPUS / f"{lang}.lareqa.json",
                                 log=readers.SkipLog(strict=True))
    assert result.language == lang
    data = load_json(f"{lang}.lareqa.json")
    qas = {qa["id"]: qa for p in _paragraphs(data) for qa in p["qas"]}
    assert result.question_ids == list(qas)
    for qid, answer in zip(result.question_ids, result.answer):
      assert qas[qid]["answers"][0]["text"] in result.sentences[answer]


def _tsv_rows(path):
  with open(path, encoding="utf-8", newline="") as f:
    lines = f.read().split("\n")
  assert lines[-1] == ""  # Ends with a newline.
  return [line.split("\t") for line in lines[:-1]]


def test_parallel_tsvs_have_the_shared_header_shape(shared_data):
  with open(shared_data / "parallel" / "en-deu.tsv", encoding="utf-8") as f:
    real = f.readline().rstrip("\n").split("\t")
  for lang in FOREIGN:
    header = _tsv_rows(CORPUS / f"parallel.eng-{lang}.tsv")[0]
    assert len(header) == len(real) and header[:2] == real[:2]
    assert header[2] == lang


def test_parallel_tsvs_parse():
  for lang in FOREIGN:
    rows = _tsv_rows(CORPUS / f"parallel.eng-{lang}.tsv")
    assert rows[0] == ["source", "eng", lang]
    pairs = rows[1:]
    assert len(pairs) >= 1000
    assert all(len(r) == 3 and r[0] == "quickstart" and r[1].strip() and r[2].strip()
               for r in pairs)
    assert len({r[1] for r in pairs}) == len(pairs)
    assert sum(r[1] != r[2] for r in pairs) == len(pairs)  # Translated, not copied.
    # Questions translate questions.
    assert all(r[1].endswith("?") == r[2].endswith("?") for r in pairs)


def test_mono_and_tatoeba_files():
  for lang in LANGS:
    lines = (CORPUS / f"mono.{lang}.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 500 and all(line.strip() == line and line for line in lines)
  for lang in FOREIGN:
    prefix = CORPUS / f"tatoeba.{lang}-eng"
    src = pathlib.Path(f"{prefix}.{lang}").read_text(encoding="utf-8").splitlines()
    eng = pathlib.Path(f"{prefix}.eng").read_text(encoding="utf-8").splitlines()
    assert len(src) == len(eng) >= 100
    assert all(a != b and a.endswith("?") == b.endswith("?") for a, b in zip(src, eng))


def _training_words():
  """Every word of the files a quickstart run trains on."""
  texts = []
  for p in _paragraphs(load_json("train.squad.json")):
    texts.append(p["context"])
    texts.extend(qa["question"] for qa in p["qas"])
  for lang in FOREIGN:
    texts.extend("\t".join(r[1:]) for r in _tsv_rows(CORPUS / f"parallel.eng-{lang}.tsv"))
  for lang in LANGS:
    texts.append((CORPUS / f"mono.{lang}.txt").read_text(encoding="utf-8"))
  return set(re.findall(r"\w+", "\n".join(texts)))


def test_eval_people_never_appear_in_training_files():
  seen = _training_words()
  for lang in LANGS:
    for paragraph in _paragraphs(load_json(f"{lang}.lareqa.json")):
      # The words every sentence shares name the paragraph's person; its surname (at
      # least) must be new.
      shared = set.intersection(*(set(re.findall(r"\w+", s)) for s in paragraph["sentences"]))
      assert shared - seen, paragraph["sentences"]
      for qa in paragraph["qas"]:
        if qa["id"].endswith("-town"):  # Towns are held out too.
          assert qa["answers"][0]["text"] not in seen
  for lang in FOREIGN:
    tatoeba = (CORPUS / f"tatoeba.{lang}-eng.eng").read_text(encoding="utf-8").splitlines()
    parallel = {r[1] for r in _tsv_rows(CORPUS / f"parallel.eng-{lang}.tsv")}
    assert not parallel & set(tatoeba)


def test_every_fact_and_language_is_covered():
  ids = [qa["id"] for p in _paragraphs(load_json("eng.lareqa.json")) for qa in p["qas"]]
  facts = collections.Counter(qid.rsplit("-", 1)[1] for qid in ids)
  assert set(facts) == {"town", "job", "year", "instrument", "pet", "food", "friend"}
  assert min(facts.values()) >= 10
