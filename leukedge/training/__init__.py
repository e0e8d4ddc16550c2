"""Training (above ``evaluation``): the model-family registry (``families``), YOLO and Keras
training runs (``yolo``, ``keras_train``, ``keras_models``), stain/lamp jitter, run records
(``runs``) and the seven-model study. Frameworks are imported inside the functions.
"""
