"""Sentence embeddings with BERT, loaded by alias from models.lock.

First, in this folder: hubpin sync (no lock is shipped, so it pins both models, then fetches them).
"""

import tensorflow as tf

import hubpin

preprocess = hubpin.load("preprocess")
bert = hubpin.KerasLayer("bert", trainable=False)

sentences = tf.constant(["hubpin pins models", "tensorflow hub hosts them"])
outputs = bert(preprocess(sentences))
print(outputs["pooled_output"].shape)  # (2, 768)
