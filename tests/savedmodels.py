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
