"""`python -m gptjax.evaluate --workdir runs/x --split test`: the command is `gptjax.cli.evaluate`."""

from gptjax.cli.evaluate import main

if __name__ == "__main__":
    main()
