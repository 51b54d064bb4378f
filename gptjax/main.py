"""`python -m gptjax.main --config ... --workdir ...`: the command is `gptjax.cli.main`."""

from gptjax.cli.main import main

if __name__ == "__main__":
    main()
