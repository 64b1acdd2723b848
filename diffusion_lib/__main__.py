"""``python -m diffusion_lib``: the command line of :mod:`diffusion_lib.cli`."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
