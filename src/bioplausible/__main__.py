"""``python -m bioplausible ...``: the same command line as the ``bioplausible`` script."""

if __name__ == "__main__":
    from bioplausible.cli import main

    raise SystemExit(main())
