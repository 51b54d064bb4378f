"""`python -m gptjax.chat --workdir runs/x`: the command is `gptjax.cli.chat`."""

from gptjax.cli.chat import main

if __name__ == "__main__":
    main()
