"""Architectures as JSON: every layer is ``{"class": name, "config": constructor arguments}``."""

import inspect

from .layers.base import LAYER_CLASSES


def layer_to_config(layer):
    """``Conv2D(1, 8, 3) -> {"class": "Conv2D", "config": {"in_channels": 1, ...}}``."""
    return {"class": type(layer).__name__, "config": layer.get_config()}


def layer_from_config(config, where="model"):
    """Rebuild a layer (with fresh weights) from :func:`layer_to_config`'s output.

    Unknown layer names, missing or unexpected arguments raise ``ValueError`` naming the place
    in the architecture (``where``), never a bare ``TypeError`` from deep inside.
    """
    if not isinstance(config, dict) or set(config) != {"class", "config"}:
        raise ValueError(f"{where}: a layer must be {{'class': ..., 'config': {{...}}}}, got {config!r:.200}")
    name, arguments = config["class"], config["config"]
    if name not in LAYER_CLASSES:
        raise ValueError(f"{where}: unknown layer {name!r}; known layers: {', '.join(sorted(LAYER_CLASSES))}")
    if not isinstance(arguments, dict):
        raise ValueError(f"{where}: the config of {name} must be a dict, got {type(arguments).__name__}")
    cls = LAYER_CLASSES[name]
    arguments = dict(arguments)
    if name == "Sequential":
        layers = arguments.pop("layers", None)
        if not isinstance(layers, list):
            raise ValueError(f"{where}: Sequential needs a list of layers")
        if arguments:
            raise ValueError(f"{where}: unexpected Sequential arguments {sorted(arguments)}")
        return cls([layer_from_config(item, f"{where}.{index}") for index, item in enumerate(layers)])
    if name == "Residual":
        for key in ("block", "shortcut"):
            if arguments.get(key) is not None:
                arguments[key] = layer_from_config(arguments[key], f"{where}.{key}")
    try:
        inspect.signature(cls).bind(**arguments)
    except TypeError as error:
        raise ValueError(f"{where}: bad arguments for {name}: {error}") from None
    try:
        return cls(**arguments)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: bad arguments for {name}: {error}") from None
