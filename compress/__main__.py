"""``python -m compress ...`` is ``compress-bench ...`` (for environments without the console script)."""

from .cli import main

raise SystemExit(main())
