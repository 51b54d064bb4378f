"""The chat role tokens on a tokenizer that lacks them (GPT-2's BPE has only <|endoftext|>).

They are added as special tokens after the existing ids, so every id the base model knows keeps
its meaning; the model then needs `gptjax.model.vocab_growth.grow_vocab` to the new size. A run
on conversations from such a model (`train.init_from`) does both: see train/init_from.py.
"""

from __future__ import annotations

from gptjax.data.chat_template import ROLES
from gptjax.data.tokenizers import BPETokenizer, Tokenizer
from gptjax.errors import UserError

ROLE_TOKENS = (*(f"<|{r}|>" for r in ROLES), "<|end|>")


def with_role_tokens(tokenizer: Tokenizer) -> Tokenizer:
    """The tokenizer with any missing role token appended (the same object when none is missing)."""
    missing = [t for t in ROLE_TOKENS if t not in tokenizer.special_ids]
    if not missing:
        return tokenizer
    if not isinstance(tokenizer, BPETokenizer):
        raise UserError(f"a {tokenizer.kind} tokenizer cannot take the chat role tokens; fine-tune a BPE "
                        "model for the role-token template (a char model chats with the plain one)")
    from tokenizers import AddedToken, Tokenizer as HFTokenizer

    copy = HFTokenizer.from_str(tokenizer.tok.to_str())
    copy.add_special_tokens([AddedToken(t, special=True) for t in missing])
    grown = type(tokenizer)(copy)
    return grown
