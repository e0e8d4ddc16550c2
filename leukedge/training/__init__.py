"""Training: data layer, Ultralytics and Keras models (heavy imports happen inside functions)."""
