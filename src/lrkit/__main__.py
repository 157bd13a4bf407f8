"""`python -m lrkit ...` runs the `lrkit` command (torchrun launches it this way)."""

from lrkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
