"""lair's encoders against PyTorch `transformers` on tiny random checkpoints built here.

Import parity (hidden states, pooled embeddings), the export round trip through `AutoModel` and
`SentenceTransformer`, and the errors `load_hf` raises on bad input.
"""
import json
import shutil

import jax
import numpy as np
import pytest
import tokenizers
from tokenizers import models as tok_models
from tokenizers import pre_tokenizers
from tokenizers import processors
import torch
import transformers

from lair.models import bert
from lair.models import hf
from lair.models import retriever

WORDS = ("the a cat dog sat on mat river bank money fish house red blue green runs quickly "
         "under over big small tree old new").split()
TEXTS = ["the cat sat on the mat", "dog", "a big red house under the old tree",
         "fish runs quickly over the green river bank", "money", "blue tree"]
# Special tokens (and so the pad id) differ by family, as in the real vocabularies.
SPECIALS = {"bert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]"],
            "xlm-roberta": ["<s>", "<pad>", "</s>", "<unk>"]}


def make_tokenizer(model_type: str, extra_words: int = 0):
  """A WordLevel tokenizer over WORDS that adds CLS/SEP (BERT) or <s>/</s> (XLM-R)."""
  specials = SPECIALS[model_type]
  words = WORDS + [f"w{i}" for i in range(extra_words)]
  vocab = {w: i for i, w in enumerate(specials + words)}
  if model_type == "bert":
    pad, unk, bos, eos = specials
  else:
    bos, pad, eos, unk = specials
  tok = tokenizers.Tokenizer(tok_models.WordLevel(vocab, unk_token=unk))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.post_processor = processors.TemplateProcessing(
      single=f"{bos} $A {eos}", special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])])
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, pad_token=pad, unk_token=unk, cls_token=bos, sep_token=eos)


def make_torch_model(model_type: str, vocab_size: int, seed: int = 0):
  """A 2-layer random BertModel / XLMRobertaModel with O(0.1) weights everywhere.

  Weights (LayerNorm ones/zeros included) are perturbed so that every parameter and its layout
  matters to the outputs.
  """
  torch.manual_seed(seed)
  common = dict(vocab_size=vocab_size, hidden_size=48, num_hidden_layers=2,
                num_attention_heads=4, intermediate_size=96, layer_norm_eps=1e-5)
  if model_type == "bert":
    config = transformers.BertConfig(max_position_embeddings=40, pad_token_id=0, **common)
    model = transformers.BertModel(config)
  else:
    config = transformers.XLMRobertaConfig(max_position_embeddings=42, pad_token_id=1,
                                           bos_token_id=0, eos_token_id=2, type_vocab_size=1,
                                           **common)
    model = transformers.XLMRobertaModel(config)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("LayerNorm.weight"):
        p.copy_(1.0 + 0.1 * torch.randn_like(p))
      else:
        p.copy_(0.1 * torch.randn_like(p))
  return model.eval()


def save_checkpoint(tmp_path, model_type, name="model"):
  """Saves a tiny model + tokenizer to tmp_path/name; returns (dir, torch model, tokenizer)."""
  tokenizer = make_tokenizer(model_type)
  model = make_torch_model(model_type, len(tokenizer))
  out = tmp_path / name
  model.save_pretrained(str(out))
  tokenizer.save_pretrained(str(out))
  return out, model, tokenizer


def torch_hidden(model, batch):
  with torch.no_grad():
    return model(input_ids=torch.tensor(batch["input_ids"]),
                 attention_mask=torch.tensor(batch["attention_mask"])).last_hidden_state.numpy()


def torch_pool(hidden, mask, kind):
  """Reference pooling in NumPy."""
  if kind == "cls":
    return hidden[:, 0]
  mask = mask[..., None].astype(np.float32)
  return (hidden * mask).sum(1) / mask.sum(1)


def tokenize(tokenizer, texts=TEXTS):
  batch = tokenizer(list(texts), padding=True, return_tensors="np")
  return {k: batch[k].astype(np.int32) for k in ("input_ids", "attention_mask")}


@pytest.mark.parametrize("model_type", ["bert", "xlm-roberta"])
def test_import_matches_pytorch(tmp_path, model_type):
  directory, model, _ = save_checkpoint(tmp_path, model_type)
  config, params, tokenizer = hf.load_hf(str(directory))
  assert config.model_type == model_type and config.num_layers == 2
  batch = tokenize(tokenizer)
  mask = batch["attention_mask"]
  assert mask.min() == 0 and mask.sum(1).min() < mask.shape[1]  # Really a padded batch.
  ref = torch_hidden(model, batch)
  ours = np.asarray(bert.encode(params, batch["input_ids"], mask, config=config))
  real = mask.astype(bool)
  np.testing.assert_array_less(np.abs(ours - ref)[real].max(), 1e-4)
  for kind in ("cls", "mean"):
    rcfg = retriever.RetrieverConfig(encoder=config, pooling=kind, normalize=False)
    pooled = retriever.embed({"encoder": params}, batch["input_ids"], mask, rcfg=rcfg)
    np.testing.assert_allclose(pooled, torch_pool(ref, mask, kind), atol=1e-4)


def test_xlmr_positions_match_hf_left_padding():
  ids = np.array([[1, 1, 0, 7, 8, 2], [0, 5, 2, 1, 1, 1]], np.int32)
  config = bert.EncoderConfig(vocab_size=10, model_type="xlm-roberta", pad_token_id=1,
                              max_position_embeddings=10)
  ref = transformers.models.xlm_roberta.modeling_xlm_roberta.XLMRobertaEmbeddings
  ref = ref.create_position_ids_from_input_ids(torch.tensor(ids), padding_idx=1).numpy()
  np.testing.assert_array_equal(bert.position_ids(ids, config), ref)


def test_import_prefixed_sharded_and_bin_checkpoints(tmp_path):
  """bert.-prefixed MLM checkpoint, sharded safetensors and a pytorch_model.bin all import."""
  tokenizer = make_tokenizer("bert")
  torch.manual_seed(1)
  mlm = transformers.BertForMaskedLM(transformers.BertConfig(
      vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
      intermediate_size=64, max_position_embeddings=40))
  mlm.eval()
  batch = tokenize(tokenizer)
  ref = torch_hidden(mlm.bert, batch)
  layouts = {
      "sharded": lambda d: mlm.save_pretrained(str(d), max_shard_size="20KB"),
      "bin": lambda d: (mlm.config.save_pretrained(str(d)),
                        torch.save(mlm.state_dict(), str(d / "pytorch_model.bin"))),
  }
  for name, save in layouts.items():
    directory = tmp_path / name
    directory.mkdir()
    save(directory)
    tokenizer.save_pretrained(str(directory))
    if name == "sharded":
      assert (directory / "model.safetensors.index.json").exists()
    config, params, _ = hf.load_hf(str(directory))
    ours = bert.encode(params, batch["input_ids"], batch["attention_mask"], config=config)
    real = batch["attention_mask"].astype(bool)
    assert np.abs(np.asarray(ours) - ref)[real].max() <= 1e-4, name

  # A bfloat16 checkpoint (NumPy has no bfloat16) imports as the same values in float32.
  half = tmp_path / "bfloat16"
  mlm.to(torch.bfloat16).save_pretrained(str(half))
  tokenizer.save_pretrained(str(half))
  _, params, _ = hf.load_hf(str(half))
  kernel = params["layer_1"]["intermediate"]["kernel"]
  assert kernel.dtype == np.float32
  np.testing.assert_array_equal(
      kernel, mlm.bert.encoder.layer[1].intermediate.dense.weight.detach().float().numpy().T)


def cosine(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.mark.parametrize("model_type,pooling,projection,normalize", [
    ("bert", "mean", "", True),
    ("xlm-roberta", "cls", "linear", False),
    ("bert", "mean", "mlp", True),
])
def test_export_round_trip(tmp_path, model_type, pooling, projection, normalize):
  from sentence_transformers import SentenceTransformer  # pylint: disable=g-import-not-at-top
  directory, _, _ = save_checkpoint(tmp_path, model_type)
  config, enc_params, tokenizer = hf.load_hf(str(directory))
  rcfg = retriever.RetrieverConfig(encoder=config, pooling=pooling, projection=projection,
                                   projection_dim=24 if projection else 0, normalize=normalize)
  params = retriever.init_retriever(rcfg, jax.random.key(0), enc_params)
  if projection:  # Non-trivial biases, so a dropped or transposed bias would show.
    params["head"] = jax.tree.map(lambda x: x + 0.05, params["head"])
  out = hf.export_hf(params, rcfg, tokenizer, tmp_path / "export")
  batch = tokenize(tokenizer)
  ours = np.asarray(retriever.embed(params, batch["input_ids"], batch["attention_mask"],
                                    rcfg=rcfg))
  assert ours.shape == (len(TEXTS), rcfg.embedding_dim)

  auto = transformers.AutoModel.from_pretrained(str(out)).eval()
  hidden = torch_hidden(auto, batch)
  np.testing.assert_allclose(
      torch_pool(hidden, batch["attention_mask"], pooling),
      retriever.embed({"encoder": enc_params}, batch["input_ids"], batch["attention_mask"],
                      rcfg=retriever.RetrieverConfig(config, pooling=pooling, normalize=False)),
      atol=1e-4)

  st = SentenceTransformer(str(out), device="cpu", local_files_only=True)
  theirs = st.encode(TEXTS, convert_to_numpy=True, batch_size=4)
  assert theirs.shape == ours.shape
  assert cosine(ours, theirs).min() >= 0.99999
  np.testing.assert_allclose(theirs, ours, atol=1e-4)  # Same scale too (normalised or not).


def test_export_separate_towers(tmp_path):
  directory, _, _ = save_checkpoint(tmp_path, "bert")
  config, enc_params, tokenizer = hf.load_hf(str(directory))
  rcfg = retriever.RetrieverConfig(encoder=config, shared_towers=False)
  params = retriever.init_retriever(rcfg, jax.random.key(0), enc_params)
  params["passage_encoder"] = jax.tree.map(lambda x: x * 0.9, params["passage_encoder"])
  out = hf.export_hf(params, rcfg, tokenizer, tmp_path / "export")
  batch = tokenize(tokenizer)
  for tower, folder in (("query", out), ("passage", out / "passage_encoder")):
    tower_cfg, tower_params, _ = hf.load_hf(str(folder))
    ours = retriever.embed(params, batch["input_ids"], batch["attention_mask"], rcfg=rcfg,
                           tower=tower)
    reloaded = retriever.embed({"encoder": tower_params}, batch["input_ids"],
                               batch["attention_mask"],
                               rcfg=retriever.RetrieverConfig(encoder=tower_cfg))
    np.testing.assert_allclose(reloaded, ours, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Errors name the file and what was expected.


def test_error_directory_without_weights(tmp_path):
  directory, _, _ = save_checkpoint(tmp_path, "bert")
  (directory / "model.safetensors").unlink()
  with pytest.raises(FileNotFoundError, match=r"no weights found.*model\.safetensors"):
    hf.load_hf(str(directory))


def test_error_unsupported_model_type(tmp_path):
  directory, _, _ = save_checkpoint(tmp_path, "bert")
  config = json.loads((directory / "config.json").read_text())
  config["model_type"] = "gpt2"
  (directory / "config.json").write_text(json.dumps(config))
  with pytest.raises(ValueError, match=r"config\.json.*'gpt2'.*\['bert', 'roberta', "
                                       r"'xlm-roberta'\]"):
    hf.load_hf(str(directory))


def test_error_tokenizer_larger_than_embedding_table(tmp_path):
  directory, _, _ = save_checkpoint(tmp_path, "bert")
  big = make_tokenizer("bert", extra_words=10)
  for f in directory.glob("tokenizer*"):
    f.unlink()
  big.save_pretrained(str(directory))
  with pytest.raises(ValueError, match=rf"{len(big)} tokens.*vocab_size={len(big) - 10}"):
    hf.load_hf(str(directory))


def test_error_shapes_disagree_with_config(tmp_path):
  directory, _, _ = save_checkpoint(tmp_path, "bert")
  config = json.loads((directory / "config.json").read_text())
  config["intermediate_size"] = 128
  (directory / "config.json").write_text(json.dumps(config))
  with pytest.raises(ValueError, match=r"model\.safetensors: tensor "
                                       r"'encoder\.layer\.0\.intermediate\.dense\.weight' has "
                                       r"shape \(96, 48\).*\(128, 48\)"):
    hf.load_hf(str(directory))


def test_error_directory_without_tokenizer(tmp_path):
  directory, _, _ = save_checkpoint(tmp_path, "bert")
  for f in directory.glob("tokenizer*"):
    f.unlink()
  with pytest.raises(FileNotFoundError, match=r"model: no tokenizer files.*tokenizer\.json"):
    hf.load_hf(str(directory))


def test_error_not_a_directory_offline(tmp_path, monkeypatch):
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  with pytest.raises(FileNotFoundError, match="not a local directory"):
    hf.load_hf(str(tmp_path / "missing"))
