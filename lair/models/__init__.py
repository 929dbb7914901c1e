"""Models: the BERT-family encoder (bert), pooling and heads (pooling), the dual-encoder retriever
(retriever), EMS's training heads (ems), Hugging Face import/export (hf), and building a
retriever from `config.model` (build)."""
