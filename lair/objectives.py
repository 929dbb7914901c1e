"""The objective plan: which loss terms a run trains, which texts they embed, which streams feed them.

Derived once from the config (`plan_objectives(config)`) and used by both the input pipeline
(the streams it reads) and the train step (the inputs it embeds and the terms it scores), so the
two cannot disagree.

Terms and their weight keys in `config.loss`:
  ir               ir_weight        query -> passages (+ hard negatives) InfoNCE
  semantic         semantic_weight  parallel pairs, both directions
  language         language_weight  z sentences against parallel pairs (Hu et al. 2023)
  xtr              xtr_weight       EMS cross-lingual token reconstruction
  ems_contrastive  ems_contrastive_weight  EMS projected contrastive loss

Embedded inputs (name: stream, ids/mask fields, tower):
  query, passage, negative   the "ir" stream (negatives only with data.ir.num_negatives > 0)
  src, tgt                   the "parallel" stream
  mono                       the "mono" stream (data.mono.paths, data.mono.from_parallel)
"""
import dataclasses
import re
from typing import Mapping

from lair import errors
from lair import losses

STREAMS = ("ir", "parallel", "mono")

# Term name -> the config.loss key holding its weight, in the order the step scores them.
WEIGHT_KEYS = {
    "ir": "ir_weight",
    "semantic": "semantic_weight",
    "language": "language_weight",
    "xtr": "xtr_weight",
    "ems_contrastive": "ems_contrastive_weight",
}
PARALLEL_TERMS = ("semantic", "language", "xtr", "ems_contrastive")

# Which inputs the language term's z may come from (config key loss.language_inputs).
LANGUAGE_INPUTS = ("ir", "mono", "ir+mono")


@dataclasses.dataclass(frozen=True)
class Input:
  """One embedded input: which batch stream and fields it comes from, which tower embeds it."""
  stream: str
  ids: str
  mask: str
  tower: str


INPUTS = {
    "query": Input("ir", "query_ids", "query_mask", "query"),
    "passage": Input("ir", "passage_ids", "passage_mask", "passage"),
    "negative": Input("ir", "negative_ids", "negative_mask", "passage"),
    "src": Input("parallel", "src_ids", "src_mask", "query"),
    "tgt": Input("parallel", "tgt_ids", "tgt_mask", "query"),
    "mono": Input("mono", "ids", "mask", "query"),
}
# A fixed id per input, so each one's dropout rng stays the same whatever else is on.
INPUT_IDS = {name: i for i, name in enumerate(INPUTS)}


@dataclasses.dataclass(frozen=True)
class ObjectivePlan:
  """What the active objectives need.

  Attributes:
    weights: {term: weight} of the terms with a nonzero weight, in WEIGHT_KEYS order.
    inputs: the inputs to embed (keys of INPUTS), in INPUTS order.
    streams: the batch streams the pipeline reads: exactly those of `inputs`.
    language_z: the inputs whose embeddings are the language term's z (() when it is off).
    z_languages: the languages z is known to hold (ISO codes, sorted); see `z_is_monolingual`.
    ir_language_id: index of data.ir.language in data.languages (-1: unknown or mixed), the
      language of z sentences taken from the IR stream, for the identity/noise diagnostics.
    num_languages: len(data.languages).
  """
  weights: Mapping[str, float]
  inputs: tuple[str, ...]
  streams: tuple[str, ...]
  language_z: tuple[str, ...]
  z_languages: tuple[str, ...]
  ir_language_id: int = -1
  num_languages: int = 1

  def has(self, term: str) -> bool:
    return term in self.weights

  def z_is_monolingual(self) -> bool:
    """True when z holds one language only: the language term can then not remove identity."""
    return self.has("language") and len(self.z_languages) < 2


class PlanError(errors.ConfigError):
  """Loss weights or inputs that cannot work; the message names the config keys."""


def _weights(loss) -> dict[str, float]:
  weights = {}
  for name, key in WEIGHT_KEYS.items():
    if key not in loss:
      raise PlanError(f"config.loss.{key} is missing: lair/configs.py defines it (term {name!r})")
    value = float(loss[key])
    if value < 0:
      raise PlanError(f"config.loss.{key}={loss[key]}: expected a weight >= 0")
    if value:
      weights[name] = value
  return weights


def mono_languages(data) -> set[str]:
  """The languages of the monolingual stream: data.mono.paths specs (and from_parallel's)."""
  codes = {m[1] for spec in data.mono.paths
           for m in [re.match(r"^([^:]+):", str(spec))] if m}
  if data.mono.get("from_parallel", 0):
    codes |= set(data.languages)  # Held-out rows of every parallel-data language.
  return codes


def plan_objectives(config) -> ObjectivePlan:
  """The plan of `config` (its loss, data.ir, data.mono keys); PlanError names what is wrong."""
  loss, data = config.loss, config.data
  weights = _weights(loss)
  if not weights:
    raise PlanError("every loss weight is 0 (config.loss.ir_weight, semantic_weight, "
                    "language_weight, xtr_weight, ems_contrastive_weight): nothing to train")
  sources = loss.get("language_inputs", "ir+mono")
  if sources not in LANGUAGE_INPUTS:
    raise PlanError(f"config.loss.language_inputs={sources!r}: expected one of {LANGUAGE_INPUTS}")
  negatives = loss.get("semantic_negatives", "other_side")
  if negatives not in losses.SEMANTIC_NEGATIVES:
    raise PlanError(f"config.loss.semantic_negatives={negatives!r}: expected one of "
                    f"{losses.SEMANTIC_NEGATIVES}")
  inputs = set()
  if "ir" in weights:
    inputs |= {"query", "passage"}
    if int(data.ir.num_negatives) > 0:
      inputs.add("negative")
  if any(t in weights for t in PARALLEL_TERMS):
    inputs |= {"src", "tgt"}
  language_z, z_languages = (), set()
  if "language" in weights:
    available = {"ir": ("ir" in weights or bool(data.ir.paths)),
                 "mono": bool(data.mono.paths) or bool(data.mono.get("from_parallel", 0))}
    chosen = [s for s in sources.split("+") if available[s]]
    if not chosen:
      raise PlanError(
          f"config.loss.language_inputs={sources!r}: none of those streams has data (the 'ir' "
          f"stream needs config.data.ir.paths, 'mono' config.data.mono.paths or "
          f"config.data.mono.from_parallel > 0), so the language loss has no z sentences")
    if "ir" in chosen:
      language_z += ("query", "passage")
      if data.ir.get("language", ""):
        z_languages.add(data.ir.language)
    if "mono" in chosen:
      language_z += ("mono",)
      z_languages |= mono_languages(data)
    inputs |= set(language_z)
  ordered = tuple(name for name in INPUTS if name in inputs)
  streams = tuple(s for s in STREAMS if any(INPUTS[n].stream == s for n in ordered))
  languages = list(data.languages)
  ir_language = data.ir.get("language", "")
  return ObjectivePlan(weights=weights, inputs=ordered, streams=streams, language_z=language_z,
                       z_languages=tuple(sorted(z_languages)),
                       ir_language_id=languages.index(ir_language) if ir_language in languages
                       else -1, num_languages=max(len(languages), 1))
