"""``python -m toyworld_training``: see cli.py."""

from .cli import main

raise SystemExit(main())
