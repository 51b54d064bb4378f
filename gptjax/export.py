"""`python -m gptjax.export --workdir runs/x --out dir`: the command is `gptjax.cli.export`."""

from gptjax.cli.export import main

if __name__ == "__main__":
    main()
