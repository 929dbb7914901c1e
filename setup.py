"""lair: language-agnostic multilingual retrievers in JAX/Flax.

Versions are pinned to the set the test suite runs against (see BUILD.md for GPU/TPU installs).
"""
import setuptools

INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "ml-collections==1.1.0",
    "absl-py==2.5.1",
    "numpy>=2.0,<3",
    "transformers==5.23.0",
    "tokenizers==0.23.3",
    "safetensors==0.8.0",
    "tensorflow-datasets==4.9.10",
    "etils==1.15.0",  # lair.data.builders imports it (epath), not only tfds.
    "array-record==0.8.6",
    "filelock==4.3.1",  # Serialises runs building the same data cache (lair.data.builders).
    # ScaNN publishes Linux wheels only (x86_64, aarch64); elsewhere evaluation uses exact search.
    "scann==1.4.2; platform_system == 'Linux'",
    "tensorboardX==2.6.5",
    "tqdm==4.70.1",  # Progress bars of training, encoding and lair.index (transformers needs it too).
]

EXTRAS = {
    # PyTorch is only a reference for parity tests; the CPU build keeps installs small.
    "test": [
        "pytest==9.2.0",
        "torch==2.13.0",
        "sentence-transformers==6.2.0",
        "pytrec-eval-terrier==0.5.11",
    ],
    # Pictures of docs/results.md (scripts/plot_results.py).
    "plots": ["matplotlib==3.11.2"],
    # The TensorBoard viewer: `tensorboard --logdir WORKDIR/tensorboard` (runs write events
    # with tensorboardX, which needs no TensorFlow).
    "tb": ["tensorboard==2.21.0"],
    "gpu": ["jax[cuda12]==0.10.2"],
    "tpu": ["jax[tpu]==0.10.2"],
}

setuptools.setup(
    name="lair",
    version="0.1.0",
    description="Language-agnostic multilingual retrievers: contrastive training in JAX/Flax.",
    packages=setuptools.find_packages(include=["lair", "lair.*"]),
    package_data={"lair": ["data/quickstart/*"]},
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
