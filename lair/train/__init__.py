"""Training: the mesh, the sharded step and GradCache, the optimiser, the loop, checkpoints.

`python -m lair.train --config=configs/NAME.py --workdir=DIR` (see __main__.py).
"""
