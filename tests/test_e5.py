"""The real multilingual-e5-small checkpoint: lair's import against PyTorch `transformers`."""
import jax
import numpy as np
import pytest
import torch
import transformers

from lair.models import hf
from lair.models import retriever

# (language, sentence); rows 2k and 2k+1 are translations of each other.
SENTENCES = [
    ("eng", "The cat is sleeping on the sofa."),
    ("fra", "Le chat dort sur le canapé."),
    ("eng", "How many people live in Berlin?"),
    ("deu", "Wie viele Menschen leben in Berlin?"),
    ("eng", "I would like a cup of coffee, please."),
    ("rus", "Я бы хотел чашку кофе, пожалуйста."),
    ("eng", "The train to Moscow leaves at eight in the morning."),
    ("ukr", "Потяг до Москви відправляється о восьмій ранку."),
    ("eng", "Water boils at one hundred degrees Celsius."),
    ("ara", "يغلي الماء عند درجة مئة مئوية."),
    ("eng", "My brother is a doctor in the city hospital."),
    ("ara", "أخي طبيب في مستشفى المدينة."),
    ("eng", "The library opens at nine o'clock."),
    ("zho", "图书馆九点开门。"),
    ("eng", "Mount Fuji is the highest mountain in Japan."),
    ("jpn", "富士山は日本で一番高い山です。"),
    ("eng", "Children are playing football in the park."),
    ("hin", "बच्चे पार्क में फुटबॉल खेल रहे हैं।"),
    ("eng", "Rice is the staple food in many Asian countries."),
    ("hin", "चावल कई एशियाई देशों में मुख्य भोजन है।"),
]


@pytest.fixture(scope="module")
def e5(e5_small_dir):
  config, params, tokenizer = hf.load_hf(str(e5_small_dir))
  model = transformers.AutoModel.from_pretrained(str(e5_small_dir)).eval()
  return config, params, tokenizer, model


def _embed_both(e5, texts):
  """(lair, PyTorch) mean-pooled, L2-normalised embeddings [N, 384] of `texts`."""
  config, params, tokenizer, model = e5
  batch = tokenizer(texts, padding=True, return_tensors="np")
  ids, mask = batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32)
  rcfg = retriever.RetrieverConfig(encoder=config, pooling="mean", normalize=True)
  ours = jax.jit(retriever.embed, static_argnames=("rcfg",))({"encoder": params}, ids, mask,
                                                             rcfg=rcfg)
  with torch.no_grad():
    hidden = model(input_ids=torch.tensor(ids),
                   attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
  # Reference pooling in NumPy (the e5 recipe: masked mean, then L2 norm).
  m = mask[..., None].astype(np.float64)
  theirs = (hidden * m).sum(1) / m.sum(1)
  theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
  return np.asarray(ours, np.float64), theirs


def test_e5_small_matches_pytorch_across_scripts(e5):
  config, _, tokenizer, _ = e5
  assert config.model_type == "bert" and config.pad_token_id == tokenizer.pad_token_id == 1
  texts = [("query: " if i % 2 == 0 else "passage: ") + s for i, (_, s) in enumerate(SENTENCES)]
  ours, theirs = _embed_both(e5, texts)
  cosines = (ours * theirs).sum(1)
  assert cosines.min() >= 0.9999, dict(zip([lang for lang, _ in SENTENCES], cosines))

  # Translation pairs outscore the same query against an unrelated passage.
  scores = ours[0::2] @ ours[1::2].T  # [queries, passages]
  matched = np.diag(scores)
  unrelated = np.roll(scores, 1, axis=1).diagonal()  # query k vs passage k-1.
  assert np.all(matched > unrelated), (matched, unrelated)
  assert np.mean(scores.argmax(1) == np.arange(len(scores))) >= 0.9


def test_e5_small_export_loads_in_sentence_transformers(e5, tmp_path):
  """lair -> export_hf -> SentenceTransformer gives lair's embeddings (real XLM-R vocabulary).

  The e5 prefixes travel as sentence-transformers prompts: prompt_name="query" adds "query: ".
  """
  from sentence_transformers import SentenceTransformer  # pylint: disable=g-import-not-at-top
  config, params, tokenizer, _ = e5
  rcfg = retriever.RetrieverConfig(encoder=config, pooling="mean", normalize=True)
  out = hf.export_hf({"encoder": params}, rcfg, tokenizer, tmp_path / "e5",
                     prompts={"query": "query: ", "passage": "passage: "})
  texts = [s for _, s in SENTENCES[:6]]
  ours, _ = _embed_both(e5, ["query: " + s for s in texts])
  st = SentenceTransformer(str(out), device="cpu", local_files_only=True)
  theirs = st.encode(texts, prompt_name="query", convert_to_numpy=True,
                     batch_size=8).astype(np.float64)
  assert st.max_seq_length == 512
  assert ((ours * theirs).sum(1) / np.linalg.norm(theirs, axis=1)).min() >= 0.99999


def test_bfloat16_embeddings_stay_close_to_float32(e5):
  """bfloat16 matmuls (float32 LayerNorm, softmax, pooling) on the real e5-small.

  Stated tolerance: every embedding within cosine 0.995 of its float32 embedding (measured:
  min 0.99999, max |diff| 0.0009 over these 20 sentences), and the translation pairs still each
  other's nearest neighbours.
  """
  import dataclasses  # pylint: disable=g-import-not-at-top
  config, params, tokenizer, _ = e5
  texts = [f"query: {t}" for _, t in SENTENCES]
  batch = tokenizer(texts, padding=True, return_tensors="np")
  ids, mask = batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32)
  embed = jax.jit(retriever.embed, static_argnames=("rcfg",))
  out = {}
  for dtype in ("float32", "bfloat16"):
    rcfg = retriever.RetrieverConfig(encoder=dataclasses.replace(config, dtype=dtype))
    out[dtype] = np.asarray(embed({"encoder": params}, ids, mask, rcfg=rcfg))
  cosine = np.sum(out["float32"] * out["bfloat16"], axis=1)
  print(f"bfloat16 vs float32: min cosine {cosine.min():.5f}, max |diff| "
        f"{np.abs(out['float32'] - out['bfloat16']).max():.4f}")
  assert cosine.min() > 0.995
  sims = out["bfloat16"] @ out["bfloat16"].T
  np.fill_diagonal(sims, -1)
  partner = np.arange(len(texts)) ^ 1  # Rows 2k and 2k+1 translate each other.
  np.testing.assert_array_equal(np.argmax(sims, axis=1), partner)
