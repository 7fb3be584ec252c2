"""Build the demo model: a real SavedModel converting Celsius to Fahrenheit, packed like tfhub.dev's.

Run once (needs the tf extra): python make_demo.py
It writes fahrenheit.tar.gz beside this file; models.toml names it by relative path.
"""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

import tensorflow as tf


class Fahrenheit(tf.Module):
    """y = x * 1.8 + 32, with the coefficients held as variables like real weights."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = tf.Variable(1.8, dtype=tf.float32)
        self.offset = tf.Variable(32.0, dtype=tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def __call__(self, celsius: tf.Tensor) -> tf.Tensor:
        return celsius * self.scale + self.offset


def main() -> None:
    here = Path(__file__).parent
    module = Fahrenheit()
    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(module, tmp, signatures={"serving_default": module.__call__})
        with tarfile.open(here / "fahrenheit.tar.gz", "w:gz") as tar:
            tar.add(tmp, arcname=".")  # member names start with ./ as on tfhub.dev
    print(f"wrote {here / 'fahrenheit.tar.gz'}")


if __name__ == "__main__":
    main()
