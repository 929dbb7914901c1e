"""lair's data layer: readers (file formats, skip counting), tfds builders, input pipeline.

* `lair.data.readers`: one function per file format; bad rows are counted in a `SkipLog`.
* `lair.data.builders`: array_record builds of the training streams (tfds, no TensorFlow).
* `lair.data.pipeline`: `TrainBatches`, the tokenized, host-sharded, resumable batches.
"""
