"""Encoders, pooling and the dual-encoder retriever (HF import/export lives in `lair.models.hf`)."""
from lair.models.bert import BertEncoder
from lair.models.bert import encode
from lair.models.bert import EncoderConfig
from lair.models.bert import init_encoder
from lair.models.pooling import l2_normalize
from lair.models.pooling import pool
from lair.models.retriever import build_from_config
from lair.models.retriever import embed
from lair.models.retriever import init_retriever
from lair.models.retriever import retriever_config_from_config
from lair.models.retriever import RetrieverConfig
from lair.models.retriever import trainable_mask
