"""`python -m gptjax.human_eval make|score ...`: the command is `gptjax.cli.human_eval`."""

from gptjax.cli.human_eval import main

if __name__ == "__main__":
    main()
