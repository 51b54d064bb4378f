"""`python -m gptjax.generate --workdir runs/x --prompt "..."`: the command is `gptjax.cli.generate`."""

from gptjax.cli.generate import main

if __name__ == "__main__":
    main()
