"""hubpin: pin TensorFlow Hub models in a lock, sync them into tensorflow_hub's cache."""

__version__ = "0.1.0"
