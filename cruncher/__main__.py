"""``python -m cruncher`` is the ``cruncher`` command."""
from cruncher.cli import main

raise SystemExit(main())
