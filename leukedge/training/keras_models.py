"""Keras classifiers of the reference notebook: a backbone with a small dense head.

The models take NHWC float32 input already scaled by ``leukedge.edge.preprocess``
(they hold no rescaling of their own, except EfficientNetB0, whose Keras
definition always contains one): ``arch_scaling`` gives the ``scale`` and
``offset`` each backbone expects. TensorFlow is imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import MissingFileError, UsageError

ARCHS = ("mobilenetv2", "efficientnetb0", "nasnetmobile")

#: Model input names: the field as ``Preprocess`` says, and the masked field (dual models).
SINGLE_INPUTS = ("field",)
DUAL_INPUTS = ("field", "masked")


def arch_scaling(arch: str) -> tuple[float, float]:
    """``(scale, offset)`` taking uint8 pixels to what the backbone expects.

    MobileNetV2 and NASNetMobile: [-1, 1] (``scale=1/127.5, offset=-1``, their
    ``preprocess_input``); EfficientNetB0: raw 0-255 (it rescales internally).
    """
    if arch not in ARCHS:
        raise UsageError(f"unknown architecture {arch!r}; choose {', '.join(ARCHS)}")
    return (1.0, 0.0) if arch == "efficientnetb0" else (1 / 127.5, -1.0)


def _backbone(arch: str, size: int, alpha: float):
    """The convolutional base, random weights, no top: (N, S, S, 3) -> (N, h, w, C)."""
    from keras import applications

    shape = (size, size, 3)
    if arch == "mobilenetv2":
        return applications.MobileNetV2(
            input_shape=shape, alpha=alpha, include_top=False, weights=None
        )
    if alpha != 1.0:
        raise UsageError(f"alpha applies to mobilenetv2 only, not {arch}")
    if arch == "efficientnetb0":
        return applications.EfficientNetB0(input_shape=shape, include_top=False, weights=None)
    return applications.NASNetMobile(input_shape=shape, include_top=False, weights=None)


def build_model(
    arch: str = "mobilenetv2",
    n_classes: int = 4,
    size: int = 224,
    *,
    weights: str | Path | None = None,
    freeze_backbone: bool = False,
    dual: bool = False,
    bn_momentum: float | None = None,
    alpha: float = 1.0,
):
    """A Keras classifier with softmax output float32 (N, n_classes).

    Single: input "field" (N, S, S, 3) -> backbone -> global average pool ->
    Dense 256 ReLU -> Dropout 0.5 -> softmax. ``dual``: inputs "field" and
    "masked" (N, S, S, 3) through ONE shared backbone (in one call, stacked on
    the batch axis), pooled, concatenated per field -> Dense 512 ReLU ->
    Dropout 0.5 -> Dense 256 ReLU -> Dropout 0.5 -> softmax.

    weights : a local backbone weights file (.h5 / .weights.h5, no top); nothing
        is downloaded. ``freeze_backbone`` then keeps it fixed.
    bn_momentum : BatchNormalization momentum of every backbone layer (Keras'
        0.99 leaves a from-scratch model's inference output constant for many
        steps: use ~0.9 or less for short runs).
    alpha : MobileNetV2 width multiplier (small values for fast tests).
    """
    import keras
    from keras import layers

    arch_scaling(arch)  # validates arch
    backbone = _backbone(arch, size, alpha)
    if weights is not None:
        weights = Path(weights)
        if not weights.is_file():
            raise MissingFileError(f"backbone weights {weights} not found (nothing is downloaded)")
        backbone.load_weights(str(weights))
    if freeze_backbone:
        if weights is None:
            raise UsageError("freezing a randomly initialised backbone: pass local weights")
        backbone.trainable = False
    if bn_momentum is not None:
        for layer in backbone.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = bn_momentum

    names = DUAL_INPUTS if dual else SINGLE_INPUTS
    inputs = [keras.Input((size, size, 3), name=name) for name in names]
    if dual:
        # One backbone call on both inputs stacked along the batch axis: called once
        # per input, each BatchNormalization would train on per-input batch
        # statistics but infer with moving statistics averaged over the two very
        # different inputs (field, mostly-blank masked field), and a from-scratch
        # model then predicts one class at inference however well it trains.
        pooled = layers.GlobalAveragePooling2D()(backbone(layers.Concatenate(axis=0)(inputs)))
        x = layers.Concatenate()(keras.ops.split(pooled, 2, axis=0))
    else:
        x = layers.GlobalAveragePooling2D()(backbone(inputs[0]))
    for units in (512, 256) if dual else (256,):
        x = layers.Dropout(0.5)(layers.Dense(units, activation="relu")(x))
    out = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs if dual else inputs[0], out, name=f"{arch}{'-dual' if dual else ''}")
