"""Load the pinned presets with no network: by name and handle (unmodified KerasHub code), and
by hubpin.resolve (the strictest: the pinned folder itself, checked against the lock)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before keras_hub imports huggingface_hub
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras_hub

import hubpin

for preset in (
    "bert_tiny_en_uncased",  # found in kagglehub's cache, where sync put the pinned version
    "hf://keras/bert_tiny_en_uncased",  # refs/main names the pinned commit
    hubpin.resolve("bert"),
    hubpin.resolve("bert_hf"),
):
    backbone = keras_hub.models.BertBackbone.from_preset(preset)
    print(f"{preset}: {backbone.count_params()} parameters")
