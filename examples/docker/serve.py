"""Loads by alias from the lock baked into the image: no network, no surprise versions."""

import hubpin

encoder = hubpin.load("encoder")
print("loaded", hubpin.resolve("encoder"))
