"""`python -m gptjax.launch --processes N -- COMMAND`: the command is `gptjax.cli.launch`."""

from gptjax.cli.launch import main

if __name__ == "__main__":
    main()
