"""``python -m tutorseg`` is the same as the ``tutorseg`` command."""

from .cli import main

raise SystemExit(main())
