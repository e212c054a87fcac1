"""``npconvnet export``: a model file written in a format other frameworks run (ONNX)."""

from pathlib import Path

from ..export import export_onnx
from .common import EXIT_OK, load_model_file


def cmd_export(args):
    model = load_model_file(args.model_file)
    path = export_onnx(model, args.onnx, input_shape=args.input_shape, opset=args.opset,
                       include_softmax=args.softmax)
    outputs = "class probabilities" if args.softmax else "the model's outputs (logits)"
    shape = "x".join(map(str, args.input_shape or model.input_shape))
    print(f"Wrote {Path(path)}: ONNX opset {args.opset}, input float32 pixels in [0, 255] of shape "
          f"(N, {shape.replace('x', ', ')}), output {outputs}")
    return EXIT_OK
