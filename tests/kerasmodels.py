"""Real KerasHub presets, built by the suite with keras_hub's own ``save_to_preset``."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "quick", "brown", "fox"]


def build_bert_preset(folder: Path, seed: int = 1) -> Path:
    """A tiny BertBackbone and its BertTokenizer saved as a Keras-format preset in ``folder``.

    The weights depend on ``seed``, so two presets compute different outputs.
    """
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(VOCABULARY),
        num_layers=1,
        num_heads=1,
        hidden_dim=4,
        intermediate_dim=8,
        max_sequence_length=8,
    )
    backbone.save_to_preset(str(folder))
    keras_hub.models.BertTokenizer(vocabulary=VOCABULARY).save_to_preset(str(folder))
    return folder


# Run in a fresh interpreter: loads a preset by what unmodified user code passes to
# from_preset, and prints its token ids and pooled output for one sentence.
LOAD_SCRIPT = """
import os, sys
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import numpy as np
import keras_hub
for preset in sys.argv[1:]:
    tokenizer = keras_hub.models.BertTokenizer.from_preset(preset)
    backbone = keras_hub.models.BertBackbone.from_preset(preset)
    ids = [int(i) for i in tokenizer("the quick brown fox")]
    token_ids = np.array([ids], dtype="int32")
    ones = np.ones_like(token_ids)
    out = backbone({"token_ids": token_ids, "segment_ids": 0 * ones, "padding_mask": ones})
    print("loaded", ids, [round(float(v), 5) for v in np.asarray(out["pooled_output"])[0]])
"""


def outputs_in_process(*presets: str) -> list[str]:
    """What unmodified keras_hub computes from each preset, in this process (kagglehub reads
    KAGGLEHUB_CACHE and the endpoint at each call; kagglesdk's TEST environment is verbose)."""
    out = io.StringIO()
    argv = sys.argv
    sys.argv = ["load", *presets]
    try:
        with contextlib.redirect_stdout(out):
            exec(LOAD_SCRIPT, {"__name__": "__load__"})
    finally:
        sys.argv = argv
    return [line for line in out.getvalue().splitlines() if line.startswith("loaded ")]
