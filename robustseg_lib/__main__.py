"""``python -m robustseg_lib`` = the ``robustseg`` command."""

from .pipeline import main

raise SystemExit(main())
