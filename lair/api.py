"""lair from Python (a notebook, a service): load a retriever, embed texts, index and search.

    from lair import api

    retriever = api.load_retriever("runs/quickstart")              # a training run (latest step)
    retriever = api.load_retriever("runs/quickstart", step="best")
    retriever = api.load_retriever("~/.cache/lair/multilingual-e5-small")   # any HF / s-t folder

    q = retriever.encode(["Wo wohnt Leon Novunt?"], kind="query")      # [1, D] float32
    p = retriever.encode(["Leon Novunt wohnt in Oststad."], kind="passage")
    q @ p.T                                                            # cosine similarities

    docs = api.read_corpus(["deu:de.txt", "fra:fr.txt"])   # or ["any text", ...], or dicts
    index = api.build_index(retriever, docs, "my_index")   # folder optional (None: in memory)
    index = api.load_index("my_index")                     # later: no re-embedding
    for hit in index.search(["Wo wohnt Leon Novunt?"], k=5)[0]:
      print(hit.rank, round(hit.score, 3), hit.id, hit.lang, hit.text)

    rows, left_out = api.mine_hard_negatives(index, [("a question", ["its answer"])],
                                             num_negatives=4)

`encode` applies the model's query / passage prefix (e5's "query: " / "passage: ") and max
length; `kind="passage"` uses the passage tower of a two-tower model. The command lines
`python -m lair.index`, `lair.search` and `lair.mine` are built on these same functions.
"""
from lair.data.readers import read_corpus
from lair.index import Hit
from lair.index import Index
from lair.index import build_index
from lair.index import load_index
from lair.inference import Retriever
from lair.inference import load_retriever
from lair.mine import mine_hard_negatives

__all__ = ["Hit", "Index", "Retriever", "build_index", "load_index", "load_retriever",
           "mine_hard_negatives", "read_corpus"]
