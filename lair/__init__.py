"""lair: language-agnostic multilingual retrievers, trained with contrastive losses in JAX/Flax."""
import logging as _logging

__version__ = "0.1.0"

# lair uses transformers for tokenizers, configs and export files only, never its PyTorch models,
# so transformers' import-time "PyTorch was not found" advice is noise in every lair command.
# Only that record is dropped; the filter must be in place before transformers is imported.
_logging.getLogger("transformers").addFilter(
    lambda record: "PyTorch was not found" not in record.getMessage())
