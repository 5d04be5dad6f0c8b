"""``python -m tutorseg`` is the same as the ``tutorseg`` command."""

from tutorseg.cli import main

raise SystemExit(main())
