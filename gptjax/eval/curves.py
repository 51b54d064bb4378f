"""`python -m gptjax.eval.curves --workdir runs/x`: the command is `gptjax.cli.curves`."""

from gptjax.cli.curves import main

if __name__ == "__main__":
    main()
