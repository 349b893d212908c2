"""``python -m aiotoolcache``: the same command line as the ``aiotoolcache`` script."""

from aiotoolcache.cli import main

raise SystemExit(main())
