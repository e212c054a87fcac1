"""``npconvnet predict``: the class and top probabilities of image files."""

import json

import numpy as np

from .common import EXIT_OK, class_names, load_model_file, model_images, predict


def cmd_predict(args):
    model = load_model_file(args.model_file)
    images = model_images(model, args.images, args.prepare)
    probabilities = predict(model, images, args.model_file, args.images)
    names = class_names(model, probabilities.shape[1])
    top = min(args.top, probabilities.shape[1])
    results = []
    for path, row in zip(args.images, probabilities):
        order = np.argsort(-row, kind="stable")[:top]
        results.append({"file": str(path), "prediction": names[order[0]],
                        "class_index": int(order[0]), "probability": float(row[order[0]]),
                        "top": [{"class": names[k], "class_index": int(k),
                                 "probability": float(row[k])} for k in order]})
    if args.json:
        print(json.dumps(results, indent=2))
        return EXIT_OK
    for result in results:
        ranked = ", ".join(f"{entry['class']} {entry['probability']:.1%}" for entry in result["top"])
        print(f"{result['file']}: {result['prediction']} ({result['probability']:.1%})   top {top}: {ranked}")
    return EXIT_OK
