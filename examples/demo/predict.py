"""Load the demo model by alias, strictly from models.lock, and print a prediction."""

import tensorflow as tf

import hubpin

model = hubpin.load("fahrenheit")
celsius = tf.constant([-40.0, 0.0, 37.0, 100.0])
for c, f in zip(celsius.numpy(), model(celsius).numpy(), strict=True):
    print(f"{c:6.1f} °C = {f:6.1f} °F")
