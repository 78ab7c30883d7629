"""``python -m runtime._cli``: the same as the ``heterarch`` command."""

from .main import main

if __name__ == "__main__":
    main()
