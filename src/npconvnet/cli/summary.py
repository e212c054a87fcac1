"""``npconvnet summary``: the layer table of a model file or of a zoo model."""

from .. import zoo
from .common import EXIT_OK, CliError, load_model_file


def cmd_summary(args):
    if (args.model_file is None) == (args.model is None):
        raise CliError("give either a MODEL_FILE or --model NAME (not both)")
    if args.model is not None:
        model = zoo.get(args.model, args.input_shape, args.num_classes)
        print(f"{args.model} for inputs of shape {'x'.join(map(str, args.input_shape))} and "
              f"{args.num_classes} classes")
        model.summary(args.input_shape)
        return EXIT_OK
    model = load_model_file(args.model_file)
    shape = "x".join(map(str, model.input_shape)) if model.input_shape is not None else "unknown"
    epochs = len(model.history) if model.history is not None else 0
    names = ", ".join(model.class_names) if model.class_names is not None else "not recorded"
    print(f"{args.model_file}: input shape {shape}, trained for {epochs} epochs, classes: {names}")
    model.summary()
    return EXIT_OK
