"""``python -m ttscale.cli``: the same as the ``ttscale`` command."""

from ttscale.cli import main

main()
