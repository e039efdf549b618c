"""The trainer process, where TensorFlow lives: Keras model, training rows, held-out ranking."""
