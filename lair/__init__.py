"""lair: language-agnostic multilingual retrievers, trained with contrastive losses in JAX/Flax."""
__version__ = "0.1.0"
