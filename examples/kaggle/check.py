"""What every reader finds after `hubpin sync`, with no network: hubpin, tensorflow_hub, kagglehub."""

from pathlib import Path

import kagglehub
import tensorflow_hub as hub
import tomllib

import hubpin

pins = tomllib.loads(Path("models.lock").read_text(encoding="utf-8"))["models"]
for alias, pin in sorted(pins.items()):
    version = pin["kaggle_version"]
    slug = pin["versioned_handle"].removeprefix("https://www.kaggle.com/models/")
    print(f"{alias}: version {version}")
    print(f"  hubpin.resolve          {hubpin.resolve(alias)}")
    print(f"  hub.resolve (URL)       {hub.resolve(pin['versioned_handle'])}")
    print(f"  kagglehub.model_download {kagglehub.model_download(slug)}")
