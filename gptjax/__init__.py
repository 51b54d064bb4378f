"""gptjax: build your own GPT with JAX and Flax, from corpus to chat."""
