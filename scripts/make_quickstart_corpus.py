r"""Writes lair's quickstart corpus (lair/data/quickstart/) from hand-written templates.

The corpus is our own (CC0): short biographies of fictional people, written in English,
German, Spanish and French from one template grammar, so that every sentence has exact
translations. From it come

* `train.squad.json`: English questions on English paragraphs (SQuAD v1.1 JSON), the
  retrieval training data;
* `parallel.eng-XXX.tsv`: English<->XXX sentence pairs (`source eng XXX` TSV), for the
  semantic contrastive loss;
* `mono.XXX.txt`: one sentence per line per language, for the language contrastive loss;
* `XXX.lareqa.json`: a LAReQA / XQuAD-R style evaluation set per language (SQuAD JSON plus
  `sentences` and `sentence_breaks`; question ids match across languages) about people
  whose surnames and towns never occur in the training files;
* `tatoeba.XXX-eng.{XXX,eng}`: line-aligned translations of held-out sentences.

The output is a pure function of `--seed`: run it again and the files are byte-identical
(tests/test_quickstart_corpus.py checks that). Usage:

  python scripts/make_quickstart_corpus.py [--out_dir lair/data/quickstart] [--seed 0]
"""
import argparse
import dataclasses
import itertools
import json
import os
import random
import re

LANGUAGES = ("eng", "deu", "spa", "fra")
FOREIGN = LANGUAGES[1:]

# ----------------------------------------------------------------------------
# Lexicons. Each entry is translated by hand; gendered forms are (masculine, feminine).

FIRST_NAMES = {  # Spelled the same in all four languages.
    "f": ["Alma", "Clara", "Elsa", "Emma", "Eva", "Greta", "Hanna", "Ida", "Irene", "Julia",
          "Lena", "Linda", "Lucia", "Mara", "Marta", "Nina", "Nora", "Olivia", "Paula", "Rosa",
          "Sara", "Sofia", "Tina", "Vera"],
    "m": ["Adrian", "Anton", "Bruno", "David", "Elio", "Emil", "Felix", "Hugo", "Ivan", "Jonas",
          "Leon", "Lukas", "Marco", "Mateo", "Milo", "Nico", "Oskar", "Pablo", "Pavel", "Rafael",
          "Simon", "Teo", "Tomas", "Victor"],
}

# Invented surnames and towns are built from syllables, so they are no word of any language.
SURNAME_ONSETS = ["Bal", "Cor", "Dem", "Fal", "Gor", "Hal", "Jor", "Kal", "Lom", "Mer", "Nov",
                  "Pel", "Quor", "Ral", "Sel", "Tor", "Vem", "Wal", "Zar"]
SURNAME_CODAS = ["ak", "ander", "ed", "esko", "ic", "ino", "is", "ov", "quist", "unt"]
TOWN_ONSETS = ["Ast", "Brek", "Dun", "Elm", "Frav", "Gliss", "Hov", "Irn", "Kest", "Lunt",
               "Mol", "Ost", "Prav", "Rov", "Skarn", "Tolv", "Uld", "Vesk", "Yarn"]
TOWN_CODAS = ["abad", "dal", "en", "ford", "holm", "ira", "mark", "ona", "stad", "ville"]

# (English, German (m, f), Spanish (m, f), French (m, f)).
JOBS = [
    ("baker", ("Bäcker", "Bäckerin"), ("panadero", "panadera"), ("boulanger", "boulangère")),
    ("teacher", ("Lehrer", "Lehrerin"), ("maestro", "maestra"), ("enseignant", "enseignante")),
    ("doctor", ("Arzt", "Ärztin"), ("médico", "médica"), ("médecin", "médecin")),
    ("farmer", ("Landwirt", "Landwirtin"), ("agricultor", "agricultora"),
     ("agriculteur", "agricultrice")),
    ("painter", ("Maler", "Malerin"), ("pintor", "pintora"), ("peintre", "peintre")),
    ("cook", ("Koch", "Köchin"), ("cocinero", "cocinera"), ("cuisinier", "cuisinière")),
    ("nurse", ("Krankenpfleger", "Krankenpflegerin"), ("enfermero", "enfermera"),
     ("infirmier", "infirmière")),
    ("engineer", ("Ingenieur", "Ingenieurin"), ("ingeniero", "ingeniera"),
     ("ingénieur", "ingénieure")),
    ("lawyer", ("Anwalt", "Anwältin"), ("abogado", "abogada"), ("avocat", "avocate")),
    ("pilot", ("Pilot", "Pilotin"), ("piloto", "piloto"), ("pilote", "pilote")),
    ("gardener", ("Gärtner", "Gärtnerin"), ("jardinero", "jardinera"),
     ("jardinier", "jardinière")),
    ("librarian", ("Bibliothekar", "Bibliothekarin"), ("bibliotecario", "bibliotecaria"),
     ("bibliothécaire", "bibliothécaire")),
    ("carpenter", ("Tischler", "Tischlerin"), ("carpintero", "carpintera"),
     ("menuisier", "menuisière")),
    ("fisher", ("Fischer", "Fischerin"), ("pescador", "pescadora"), ("pêcheur", "pêcheuse")),
]

# (English, German, Spanish, French): the noun phrase as the verb "play" takes it.
INSTRUMENTS = [
    ("the violin", "Geige", "el violín", "du violon"),
    ("the guitar", "Gitarre", "la guitarra", "de la guitare"),
    ("the piano", "Klavier", "el piano", "du piano"),
    ("the flute", "Flöte", "la flauta", "de la flûte"),
    ("the drums", "Schlagzeug", "la batería", "de la batterie"),
    ("the cello", "Cello", "el violonchelo", "du violoncelle"),
    ("the trumpet", "Trompete", "la trompeta", "de la trompette"),
    ("the accordion", "Akkordeon", "el acordeón", "de l'accordéon"),
    ("the harp", "Harfe", "el arpa", "de la harpe"),
    ("the clarinet", "Klarinette", "el clarinete", "de la clarinette"),
]

# (English, German accusative, Spanish, French), each with its indefinite article.
PETS = [
    ("a dog", "einen Hund", "un perro", "un chien"),
    ("a cat", "eine Katze", "un gato", "un chat"),
    ("a horse", "ein Pferd", "un caballo", "un cheval"),
    ("a rabbit", "ein Kaninchen", "un conejo", "un lapin"),
    ("a parrot", "einen Papagei", "un loro", "un perroquet"),
    ("a goat", "eine Ziege", "una cabra", "une chèvre"),
    ("a tortoise", "eine Schildkröte", "una tortuga", "une tortue"),
    ("a hamster", "einen Hamster", "un hámster", "un hamster"),
    ("a donkey", "einen Esel", "un burro", "un âne"),
    ("a goose", "eine Gans", "una oca", "une oie"),
]

# (English, German, Spanish, French): the dish as the subject complement of "is".
FOODS = [
    ("soup", "Suppe", "la sopa", "la soupe"),
    ("pizza", "Pizza", "la pizza", "la pizza"),
    ("rice", "Reis", "el arroz", "le riz"),
    ("fish", "Fisch", "el pescado", "le poisson"),
    ("cheese", "Käse", "el queso", "le fromage"),
    ("salad", "Salat", "la ensalada", "la salade"),
    ("apple pie", "Apfelkuchen", "la tarta de manzana", "la tarte aux pommes"),
    ("curry", "Curry", "el curry", "le curry"),
    ("paella", "Paella", "la paella", "la paella"),
    ("couscous", "Couscous", "el cuscús", "le couscous"),
]

# ----------------------------------------------------------------------------
# Templates. For each fact: the slot that holds the answer, then per language two
# statements and two questions; template i of a language translates template i of English.
# Slots: {name} {town} {year} {job} {instrument} {pet} {food} {friend} and
# gendered words (see `slots`).

FACTS = {
    "town": dict(
        answer="town",
        eng=(["{name} lives in {town}.", "{name} has lived in {town} for many years."],
             ["Where does {name} live?", "In which town does {name} live?"]),
        deu=(["{name} wohnt in {town}.", "{name} wohnt seit vielen Jahren in {town}."],
             ["Wo wohnt {name}?", "In welcher Stadt wohnt {name}?"]),
        spa=(["{name} vive en {town}.", "{name} vive en {town} desde hace muchos años."],
             ["¿Dónde vive {name}?", "¿En qué ciudad vive {name}?"]),
        fra=(["{name} habite à {town}.", "{name} habite à {town} depuis de nombreuses années."],
             ["Où habite {name} ?", "Dans quelle ville habite {name} ?"])),
    "job": dict(
        answer="job",
        eng=(["{name} works as {job}.", "{name} is {job} by profession."],
             ["What does {name} do for a living?", "What is {name}'s job?"]),
        deu=(["{name} arbeitet als {job}.", "{name} ist von Beruf {job}."],
             ["Was macht {name} beruflich?", "Was ist {name} von Beruf?"]),
        spa=(["{name} trabaja como {job}.", "{name} es {job} de profesión."],
             ["¿A qué se dedica {name}?", "¿Cuál es la profesión de {name}?"]),
        fra=(["{name} travaille comme {job}.", "{name} est {job} de profession."],
             ["Que fait {name} dans la vie ?", "Quel est le métier de {name} ?"])),
    "year": dict(
        answer="year",
        eng=(["{name} was born in {year}.", "{name} was born in the year {year}."],
             ["When was {name} born?", "In which year was {name} born?"]),
        deu=(["{name} wurde {year} geboren.", "{name} wurde im Jahr {year} geboren."],
             ["Wann wurde {name} geboren?", "In welchem Jahr wurde {name} geboren?"]),
        spa=(["{name} nació en {year}.", "{name} nació en el año {year}."],
             ["¿Cuándo nació {name}?", "¿En qué año nació {name}?"]),
        fra=(["{name} est {ne} en {year}.", "{name} est {venu} au monde en {year}."],
             ["Quand {name} est-{il} {ne} ?", "En quelle année {name} est-{il} {ne} ?"])),
    "instrument": dict(
        answer="instrument",
        eng=(["{name} plays {instrument}.", "{name} has played {instrument} since childhood."],
             ["Which instrument does {name} play?", "What instrument can {name} play?"]),
        deu=(["{name} spielt {instrument}.", "{name} spielt seit der Kindheit {instrument}."],
             ["Welches Instrument spielt {name}?", "Welches Instrument kann {name} spielen?"]),
        spa=(["{name} toca {instrument}.", "{name} toca {instrument} desde la infancia."],
             ["¿Qué instrumento toca {name}?", "¿Qué instrumento sabe tocar {name}?"]),
        fra=(["{name} joue {instrument}.", "{name} joue {instrument} depuis l'enfance."],
             ["De quel instrument joue {name} ?", "De quel instrument {name} sait-{il} jouer ?"])),
    "pet": dict(
        answer="pet",
        eng=(["{name} has {pet}.", "{name} keeps {pet} as a pet."],
             ["What animal does {name} have?", "Which pet does {name} keep?"]),
        deu=(["{name} hat {pet}.", "{name} hält {pet} als Haustier."],
             ["Welches Tier hat {name}?", "Welches Haustier hält {name}?"]),
        spa=(["{name} tiene {pet}.", "{name} tiene {pet} como mascota."],
             ["¿Qué animal tiene {name}?", "¿Qué mascota tiene {name}?"]),
        fra=(["{name} a {pet}.", "{name} a {pet} comme animal de compagnie."],
             ["Quel animal {name} a-t-{il} ?",
              "Quel animal de compagnie {name} possède-t-{il} ?"])),
    "food": dict(
        answer="food",
        eng=(["{name}'s favourite food is {food}.", "{name} likes to eat {food} most of all."],
             ["What is {name}'s favourite food?", "What does {name} like to eat most?"]),
        deu=(["Das Lieblingsessen von {name} ist {food}.", "{name} isst am liebsten {food}."],
             ["Was ist das Lieblingsessen von {name}?", "Was isst {name} am liebsten?"]),
        spa=(["La comida favorita de {name} es {food}.",
              "Lo que más le gusta comer a {name} es {food}."],
             ["¿Cuál es la comida favorita de {name}?",
              "¿Qué es lo que más le gusta comer a {name}?"]),
        fra=(["Le plat préféré de {name} est {food}.",
              "Ce que {name} préfère manger, c'est {food}."],
             ["Quel est le plat préféré de {name} ?", "Qu'est-ce que {name} préfère manger ?"])),
    "friend": dict(
        answer="friend",
        eng=(["{name}'s best friend is {friend}.",
              "{name} and {friend} have been best friends since school."],
             ["Who is {name}'s best friend?", "Who has been friends with {name} since school?"]),
        deu=(["{the_best_friend} von {name} ist {friend}.",
              "{name} und {friend} sind seit der Schulzeit {best_friends}."],
             ["Mit wem ist {name} am besten befreundet?",
              "Mit wem ist {name} seit der Schulzeit befreundet?"]),
        spa=(["{the_best_friend} de {name} es {friend}.",
              "{name} y {friend} son {best_friends} desde la escuela."],
             ["¿Quién es el mejor amigo de {name}?",
              "¿Con quién tiene amistad {name} desde la escuela?"]),
        fra=(["{the_best_friend} de {name} est {friend}.",
              "{name} et {friend} sont {best_friends} depuis l'école."],
             ["Qui est le meilleur ami de {name} ?",
              "Avec qui {name} est-{il} {ami} depuis l'école ?"])),
}
FACT_NAMES = tuple(FACTS)


@dataclasses.dataclass(frozen=True)
class Person:
  """A fictional person: every fact the templates can state about them."""
  name: str
  gender: str  # "m" | "f"
  town: str
  job: int  # Index into JOBS.
  year: int
  instrument: int  # Index into INSTRUMENTS.
  pet: int  # Index into PETS.
  food: int  # Index into FOODS.
  friend: str
  friend_gender: str


def _drop_article(phrase: str) -> str:
  """"the violin" -> "violin", "de l'accordéon" -> "accordéon", "Geige" -> "Geige"."""
  for article in ("de la ", "de l'", "the ", "el ", "la ", "le ", "du ", "a ", "an ",
                  "einen ", "eine ", "ein ", "un ", "una ", "une "):
    if phrase.startswith(article):
      return phrase[len(article):]
  return phrase


def slots(person: Person, lang: str) -> tuple[dict[str, str], dict[str, str]]:
  """(slot values, answer text per fact) for `person` in `lang`."""
  female, friend_female = person.gender == "f", person.friend_gender == "f"
  column = LANGUAGES.index(lang)
  job = JOBS[person.job][column]
  # English takes the job with its article ("works as an engineer"), the others without.
  job = ("an " if job[0] in "aeiou" else "a ") + job if lang == "eng" else job[female]
  values = {"name": person.name, "town": person.town, "year": str(person.year), "job": job,
            "instrument": INSTRUMENTS[person.instrument][column],
            "pet": PETS[person.pet][column], "food": FOODS[person.food][column],
            "friend": person.friend}
  both_female = female and friend_female
  if lang == "deu":
    values["the_best_friend"] = "Die beste Freundin" if friend_female else "Der beste Freund"
    values["best_friends"] = "beste Freundinnen" if both_female else "beste Freunde"
  elif lang == "spa":
    values["the_best_friend"] = "La mejor amiga" if friend_female else "El mejor amigo"
    values["best_friends"] = "mejores amigas" if both_female else "mejores amigos"
  elif lang == "fra":
    values["the_best_friend"] = "La meilleure amie" if friend_female else "Le meilleur ami"
    values["best_friends"] = "meilleures amies" if both_female else "meilleurs amis"
    values.update(il="elle" if female else "il", ne="née" if female else "né",
                  venu="venue" if female else "venu", ami="amie" if female else "ami")
  answers = {fact: _drop_article(values[FACTS[fact]["answer"]]) for fact in FACT_NAMES}
  return values, answers


_FRENCH_ELISION = re.compile(r"\b([dD]|[qQ]u)e (?=[AEIOUÉ])")


def render(pattern: str, values: dict[str, str], lang: str) -> str:
  """`pattern` with its slots filled; French elides "de Elsa" to "d'Elsa"."""
  text = pattern.format(**values)
  return _FRENCH_ELISION.sub(r"\1'", text) if lang == "fra" else text


def statement(person: Person, fact: str, template: int, lang: str) -> tuple[str, int, str]:
  """(sentence, answer offset in it, answer text) stating `fact` about `person`."""
  values, answers = slots(person, lang)
  pattern = FACTS[fact][lang][0][template]
  slot = "{" + FACTS[fact]["answer"] + "}"
  if pattern.count(slot) != 1:
    raise ValueError(f"FACTS[{fact!r}][{lang!r}] statement {template}: expected {slot} once")
  head = render(pattern[:pattern.index(slot)], values, lang)
  answer = answers[fact]
  offset = len(head) + values[FACTS[fact]["answer"]].index(answer)
  sentence = render(pattern, values, lang)
  assert sentence[offset:offset + len(answer)] == answer, (sentence, answer)
  return sentence, offset, answer


def question(person: Person, fact: str, template: int, lang: str) -> str:
  """The question asking for `fact` about `person`, in `lang`."""
  return render(FACTS[fact][lang][1][template], slots(person, lang)[0], lang)


# ----------------------------------------------------------------------------
# People, in disjoint pools: the evaluation people have surnames and towns that no
# training file mentions.


def _split_pool(rng: random.Random, onsets, codas, held_out: int) -> tuple[list[str], list[str]]:
  """All onset+coda words, shuffled and split into (training, held-out) lists."""
  words = sorted(a + b for a, b in itertools.product(onsets, codas))
  rng.shuffle(words)
  return words[held_out:], words[:held_out]


def make_people(rng: random.Random, n: int, surnames, towns, taken: set) -> list[Person]:
  """`n` people with full names not in `taken` (which is updated)."""
  people = []
  while len(people) < n:
    gender = rng.choice("fm")
    name = f"{rng.choice(FIRST_NAMES[gender])} {rng.choice(surnames)}"
    friend_gender = rng.choice("fm")
    friend = f"{rng.choice(FIRST_NAMES[friend_gender])} {rng.choice(surnames)}"
    if name in taken or friend == name:
      continue
    taken.add(name)
    people.append(Person(
        name=name, gender=gender, town=rng.choice(towns), job=rng.randrange(len(JOBS)),
        year=rng.randrange(1950, 2006), instrument=rng.randrange(len(INSTRUMENTS)),
        pet=rng.randrange(len(PETS)), food=rng.randrange(len(FOODS)),
        friend=friend, friend_gender=friend_gender))
  return people


# ----------------------------------------------------------------------------
# Paragraphs and the files.


def paragraph(rng: random.Random, person: Person, index: str, num_questions: int,
              langs) -> dict[str, dict]:
  """One SQuAD paragraph per language about `person`: every fact, in a random order.

  The same facts, order and templates in every language; `num_questions` facts are
  asked about, with ids `{index}-{fact}` shared by the languages.
  """
  facts = list(FACT_NAMES)
  rng.shuffle(facts)
  templates = {fact: rng.randrange(2) for fact in facts}
  asked = sorted(rng.sample(facts, num_questions), key=facts.index)
  question_templates = {fact: rng.randrange(2) for fact in asked}
  out = {}
  for lang in langs:
    sentences, breaks, answer_at = [], [], {}
    start = 0
    for fact in facts:
      sentence, offset, answer = statement(person, fact, templates[fact], lang)
      answer_at[fact] = (start + offset, answer)
      sentences.append(sentence)
      breaks.append([start, start + len(sentence)])
      start += len(sentence) + 1
    qas = [{"answers": [{"answer_start": answer_at[fact][0], "text": answer_at[fact][1]}],
            "id": f"{index}-{fact}",
            "question": question(person, fact, question_templates[fact], lang)}
           for fact in asked]
    out[lang] = {"context": " ".join(sentences), "qas": qas,
                 "sentence_breaks": breaks, "sentences": sentences}
  return out


def squad_json(paragraphs: list[dict], title: str, per_article: int) -> dict:
  """SQuAD v1.1 JSON: `paragraphs` grouped into articles of `per_article`."""
  articles = [{"paragraphs": paragraphs[i:i + per_article],
               "title": f"{title}_{i // per_article:02d}"}
              for i in range(0, len(paragraphs), per_article)]
  return {"data": articles, "version": "1.1"}


def random_sentence(rng: random.Random, person: Person, langs) -> dict[str, str]:
  """One statement or question about `person`, translated into each of `langs`."""
  fact = rng.choice(FACT_NAMES)
  template = rng.randrange(2)
  if rng.random() < 0.65:
    return {lang: statement(person, fact, template, lang)[0] for lang in langs}
  return {lang: question(person, fact, template, lang) for lang in langs}


def write_text(path: str, text: str) -> None:
  with open(path, "w", encoding="utf-8", newline="\n") as f:
    f.write(text)


def write_json(path: str, data: dict) -> None:
  write_text(path, json.dumps(data, ensure_ascii=False) + "\n")


def make_corpus(out_dir: str, seed: int = 0, *, train_people: int = 300,
                train_questions: int = 5, parallel_pairs: int = 2000, mono_lines: int = 800,
                eval_people: int = 48, eval_questions: int = 4,
                tatoeba_lines: int = 200) -> list[str]:
  """Writes every corpus file into `out_dir`; returns their names."""
  rng = random.Random(seed)
  surnames, eval_surnames = _split_pool(rng, SURNAME_ONSETS, SURNAME_CODAS, held_out=40)
  towns, eval_towns = _split_pool(rng, TOWN_ONSETS, TOWN_CODAS, held_out=40)
  taken = set()
  train = make_people(rng, train_people, surnames, towns, taken)
  heldout = make_people(rng, eval_people, eval_surnames, eval_towns, taken)
  extra = make_people(rng, 600, surnames, towns, taken)  # For parallel and mono sentences.
  os.makedirs(out_dir, exist_ok=True)
  written = []

  def put(name, writer, content):
    writer(os.path.join(out_dir, name), content)
    written.append(name)

  # English retrieval training data.
  paragraphs = [paragraph(rng, p, f"train-{i:04d}", train_questions, ["eng"])["eng"]
                for i, p in enumerate(train)]
  for p in paragraphs:  # Plain SQuAD v1.1: no sentence annotations.
    del p["sentences"], p["sentence_breaks"]
  put("train.squad.json", write_json, squad_json(paragraphs, "quickstart_train", 20))

  # Parallel pairs: statements and questions about training-pool people.
  people = train + extra
  for lang in FOREIGN:
    pairs, seen = [], set()
    while len(pairs) < parallel_pairs:
      texts = random_sentence(rng, rng.choice(people), ["eng", lang])
      if texts["eng"] not in seen:
        seen.add(texts["eng"])
        pairs.append(f"quickstart\t{texts['eng']}\t{texts[lang]}\n")
    put(f"parallel.eng-{lang}.tsv", write_text, f"source\teng\t{lang}\n" + "".join(pairs))

  # Monolingual text: sentences drawn independently for each language (not parallel).
  for lang in LANGUAGES:
    lines = sorted({random_sentence(rng, rng.choice(extra), [lang])[lang]
                    for _ in range(mono_lines)})
    rng.shuffle(lines)
    put(f"mono.{lang}.txt", write_text, "".join(line + "\n" for line in lines))

  # Zero-shot evaluation (LAReQA): held-out people, the same paragraphs in every language.
  by_lang = {lang: [] for lang in LANGUAGES}
  for i, person in enumerate(heldout):
    for lang, p in paragraph(rng, person, f"eval-{i:04d}", eval_questions, LANGUAGES).items():
      by_lang[lang].append(p)
  for lang in LANGUAGES:
    put(f"{lang}.lareqa.json", write_json, squad_json(by_lang[lang], "quickstart_eval", 12))

  # Tatoeba-style bitext retrieval on held-out sentences.
  rows = []
  seen = set()
  while len(rows) < tatoeba_lines:
    texts = random_sentence(rng, rng.choice(heldout), LANGUAGES)
    if texts["eng"] not in seen:
      seen.add(texts["eng"])
      rows.append(texts)
  for lang in FOREIGN:
    for side in (lang, "eng"):
      put(f"tatoeba.{lang}-eng.{side}", write_text, "".join(r[side] + "\n" for r in rows))
  return written


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  here = os.path.dirname(os.path.abspath(__file__))
  parser.add_argument("--out_dir", default=os.path.join(here, "..", "lair", "data", "quickstart"))
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  names = make_corpus(args.out_dir, args.seed)
  sizes = sum(os.path.getsize(os.path.join(args.out_dir, n)) for n in names)
  print(f"wrote {len(names)} files ({sizes / 1e6:.2f} MB) to {os.path.normpath(args.out_dir)}")


if __name__ == "__main__":
  main()
