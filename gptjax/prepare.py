"""`python -m gptjax.prepare --config ... --out DIR`: the command is `gptjax.cli.prepare`."""

from gptjax.cli.prepare import main

if __name__ == "__main__":
    main()
