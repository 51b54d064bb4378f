"""`python -m gptjax.serve --workdir runs/x`: the command is `gptjax.cli.serve`."""

from gptjax.cli.serve import main

if __name__ == "__main__":
    main()
