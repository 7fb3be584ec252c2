"""Real SavedModels, built with TensorFlow by the suite, packed the way tfhub.dev packs them."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import BinaryIO


def build_affine(folder: Path, scale: float, bias: float) -> Path:
    """A SavedModel computing ``x * scale + bias`` on a float32 vector, with weights as variables."""
    import tensorflow as tf

    class Affine(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = tf.Variable(scale, dtype=tf.float32)
            self.bias = tf.Variable(bias, dtype=tf.float32)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def __call__(self, x: tf.Tensor) -> tf.Tensor:
            return x * self.scale + self.bias

    module = Affine()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.__call__})
    return folder


def pack(folder: Path, *, gzip: bool = True, prefix: str = ".") -> bytes:
    """A tar(.gz) of ``folder`` whose member names start with ``./`` like tfhub.dev's."""
    buffer = io.BytesIO()
    pack_into(buffer, folder, gzip=gzip, prefix=prefix)
    return buffer.getvalue()


def pack_into(
    fileobj: BinaryIO, folder: Path, *, gzip: bool = True, prefix: str = ".", level: int = 9
) -> None:
    """Write :func:`pack`'s archive to an open file, for archives too big to hold in memory."""
    mode = "w:gz" if gzip else "w"
    options = {"compresslevel": level} if gzip else {}
    with tarfile.open(fileobj=fileobj, mode=mode, **options) as tar:  # type: ignore[call-overload]
        tar.add(folder, arcname=prefix)


# A BERT-shaped pair as tfhub.dev's bert_en_uncased_preprocess/3 and bert_en_uncased_L-12_H-768_A-12/4
# are called: the preprocessor maps a batch of strings to the encoder's three int32 inputs,
# the encoder maps those to pooled_output, sequence_output, encoder_outputs and default.
BERT_VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hubpin", "pins", "models", "tensorflow"]
BERT_SEQ_LENGTH = 8  # tfhub.dev's preprocessor pads to 128
BERT_HIDDEN = 4  # the encoder's 768


def bert_weights() -> dict[str, list[list[float]] | list[float]]:
    """The tiny encoder's weights: its word embeddings and its pooler's kernel and bias."""
    import numpy as np

    rng = np.random.default_rng(2)  # the example's two sentences come out about 0.53 alike
    return {
        "embeddings": rng.normal(size=(len(BERT_VOCABULARY), BERT_HIDDEN)).tolist(),
        "kernel": (rng.normal(size=(BERT_HIDDEN, BERT_HIDDEN)) * 0.5).tolist(),
        "bias": (rng.normal(size=BERT_HIDDEN) * 0.1).tolist(),
    }


def bert_tokens(sentence: str) -> list[int]:
    """What the preprocessor makes of one sentence: [CLS] words [SEP], unknown words [UNK],
    cut to BERT_SEQ_LENGTH (padding, id 0, is masked out)."""
    words = [
        BERT_VOCABULARY.index(w) if w in BERT_VOCABULARY else 1 for w in sentence.lower().split()
    ]
    return [2, *words, 3][:BERT_SEQ_LENGTH]


def build_bert_preprocess(folder: Path) -> Path:
    """A SavedModel whose ``__call__`` takes a string vector and returns the encoder inputs."""
    import tensorflow as tf

    class Preprocess(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vocab = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(BERT_VOCABULARY), tf.range(len(BERT_VOCABULARY), dtype=tf.int32)
                ),
                default_value=1,
            )

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def __call__(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
            words = tf.strings.split(tf.strings.lower(text))
            ids = tf.ragged.map_flat_values(self.vocab.lookup, words)
            edge = tf.ones([tf.shape(text)[0], 1], tf.int32)
            ids = tf.concat([2 * edge, ids, 3 * edge], axis=1)
            word_ids = ids.to_tensor(default_value=0, shape=[None, BERT_SEQ_LENGTH])
            return {
                "input_word_ids": word_ids,
                "input_mask": tf.cast(word_ids != 0, tf.int32),
                "input_type_ids": tf.zeros_like(word_ids),
            }

    tf.saved_model.save(Preprocess(), str(folder))
    return folder


def build_bert_encoder(folder: Path) -> Path:
    """A SavedModel whose ``__call__`` takes the three inputs and returns BERT's outputs: each
    token's embedding (masked) as sequence_output, and tanh(mean of them @ kernel + bias) as
    pooled_output; its weights are trainable variables, as for hub.KerasLayer(trainable=True)."""
    import tensorflow as tf

    weights = bert_weights()
    spec = tf.TensorSpec([None, None], tf.int32)

    class Encoder(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embeddings = tf.Variable(weights["embeddings"], dtype=tf.float32)
            self.kernel = tf.Variable(weights["kernel"], dtype=tf.float32)
            self.bias = tf.Variable(weights["bias"], dtype=tf.float32)

        @tf.function(
            input_signature=[{"input_word_ids": spec, "input_mask": spec, "input_type_ids": spec}]
        )
        def __call__(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            mask = tf.cast(inputs["input_mask"], tf.float32)[..., None]
            sequence = tf.gather(self.embeddings, inputs["input_word_ids"]) * mask
            mean = tf.reduce_sum(sequence, axis=1) / tf.reduce_sum(mask, axis=1)
            pooled = tf.tanh(tf.matmul(mean, self.kernel) + self.bias)
            return {
                "pooled_output": pooled,
                "default": pooled,
                "sequence_output": sequence,
                "encoder_outputs": [sequence],
            }

    tf.saved_model.save(Encoder(), str(folder))
    return folder


def bert_pooled(sentence: str) -> list[float]:
    """The encoder's pooled_output for one sentence, computed without TensorFlow."""
    import numpy as np

    weights = bert_weights()
    mean = np.asarray(weights["embeddings"])[bert_tokens(sentence)].mean(axis=0)
    return np.tanh(mean @ np.asarray(weights["kernel"]) + np.asarray(weights["bias"])).tolist()
