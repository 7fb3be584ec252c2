"""Sentence embeddings with BERT, loaded by alias from models.lock: how alike two sentences are.

First, in this folder: hubpin sync (no lock is shipped, so it pins both models, then fetches
them); see README.md.
"""

import tensorflow as tf

import hubpin

preprocess = hubpin.load("preprocess")  # strings -> input_word_ids, input_mask, input_type_ids
bert = hubpin.KerasLayer("bert", trainable=False)

sentences = tf.constant(["hubpin pins models", "tensorflow hub hosts them"])
pooled = bert(preprocess(sentences))["pooled_output"]  # one embedding per sentence
print("pooled_output shape:", tuple(pooled.shape))  # (2, 768)
unit = tf.math.l2_normalize(pooled, axis=-1)
print(f"cosine similarity: {float(tf.reduce_sum(unit[0] * unit[1])):.4f}")
