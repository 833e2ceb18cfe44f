"""`python -m delivery` is the `delivery` command."""

from delivery.cli.main import main

if __name__ == "__main__":
    main()
