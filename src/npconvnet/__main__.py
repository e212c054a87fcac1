"""``python -m npconvnet``: the ``npconvnet`` command (see ``npconvnet.cli``)."""

from .cli import main

raise SystemExit(main())
