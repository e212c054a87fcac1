"""The ``npconvnet`` command: train, evaluate, predict, summary, features, explain, export and
serve.

``main(argv)`` is the console script's entry point (``python -m npconvnet`` runs it too); it
returns the exit status: 0 on success, 2 for bad input (a missing or unreadable file, an
unknown name, an impossible number), 3 when training diverged (the loss became NaN or
infinite), 130 when interrupted with Ctrl-C, 1 for an unexpected internal error. Errors print
one line, ``npconvnet: error: ...``, on stderr; ``--debug`` shows the Python traceback instead.

``npconvnet train`` survives being stopped at any moment, by Ctrl-C or a kill: the checkpoint
written when training starts and after every epoch goes on with ``--resume``, to the same
weights and history as a run never stopped. A diverged run writes no model file: the
checkpoint keeps the last good epoch.

The package: ``parser`` (the options of every subcommand), ``common`` (errors, files, image
preparation), and one module per subcommand: ``train``, ``evaluate``, ``predict``,
``summary``, ``features``, ``explain``, ``export``, ``serve`` (a web page to draw digits on;
Ctrl-C stops it with exit status 130 like any other command).
"""

import sys
import warnings

from ..parallel import get_num_threads, set_num_threads
from .common import EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, EXPECTED_ERRORS, CliError, one_line
from .evaluate import cmd_evaluate
from .explain import cmd_explain
from .export import cmd_export
from .features import cmd_features
from .parser import build_parser
from .predict import cmd_predict
from .serve import cmd_serve
from .summary import cmd_summary
from .train import cmd_train

__all__ = ["main", "build_parser"]


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"npconvnet: warning: {one_line(message)}", file=sys.stderr)


def main(argv=None):
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:             # --help, --version, or a bad command line
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    commands = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
                "summary": cmd_summary, "features": cmd_features, "explain": cmd_explain,
                "export": cmd_export, "serve": cmd_serve}
    threads = get_num_threads()         # --threads holds for this command, not for the caller after it
    try:
        if getattr(args, "threads", None) is not None:
            set_num_threads(args.threads)
        with warnings.catch_warnings():
            if not debug:
                warnings.showwarning = _show_warning
            return commands[args.command](args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("npconvnet: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except EXPECTED_ERRORS as error:
        if debug:
            raise
        print(f"npconvnet: error: {one_line(error)}", file=sys.stderr)
        return error.exit_status if isinstance(error, CliError) else EXIT_USAGE
    except Exception as error:      # a bug: say so in one line; --debug shows where
        if debug:
            raise
        print(f"npconvnet: internal error: {type(error).__name__}: {one_line(error)} "
              "(run again with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    finally:
        set_num_threads(threads)
