"""The chat template (ids, loss mask, fitting the context) and the chat REPL, driven by scripts."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from gptjax.cli.chat import repl
from gptjax.data.tokenizers import SPECIAL_TOKENS, CharTokenizer
from gptjax.errors import UserError
from gptjax.generate.chat_session import ChatSession
from gptjax.data.chat_template import ChatTemplate, Turn, render_conversation
from gptjax.generate.generator import Generator
from gptjax.generate.settings import GenerationSettings
from test_generate import LetterTokenizer, bigram_gpt

CHARS = sorted(set("System: \nUser: \nAssistant: \nok hi"))
PIECES = [c.encode() for c in CHARS] + [b""] * len(SPECIAL_TOKENS)
SPECIALS = {t: len(CHARS) + i for i, t in enumerate(SPECIAL_TOKENS)}


def reply_machine() -> list[int]:
    """Successors of a bigram model that answers "hi" after <|assistant|> and " ok" after "Assistant:"."""
    char = CHARS.index
    successor = [char("o")] * len(PIECES)
    successor[SPECIALS["<|assistant|>"]] = char("h")
    successor[char("h")] = char("i")
    successor[char("i")] = SPECIALS["<|end|>"]
    for a, b in ((":", " "), (" ", "o"), ("o", "k"), ("k", "\n")):
        successor[char(a)] = char(b)
    return successor


def session(role_tokens: bool, persona: str = "") -> ChatSession:
    tokenizer = LetterTokenizer(len(PIECES), PIECES, SPECIALS if role_tokens else {})
    generator = Generator(bigram_gpt(reply_machine()), tokenizer)
    return ChatSession(generator, GenerationSettings(temperature=0.8, max_new_tokens=12), persona)


def chat(s: ChatSession, script: str) -> list[str]:
    out = io.StringIO()
    repl(s, io.StringIO(script), out)
    return out.getvalue().split("you> ")[1:]


def test_role_tokens_render_turns_and_mask_only_the_assistant():
    tok = LetterTokenizer(len(PIECES), PIECES, SPECIALS)
    turns = [Turn("system", "hi"), Turn("user", "ok"), Turn("assistant", "hi")]
    ids, mask = render_conversation(turns, tok, open_reply=False)
    S, c = SPECIALS, CHARS.index
    assert ids.tolist() == [S["<|system|>"], c("h"), c("i"), S["<|end|>"], S["<|user|>"], c("o"), c("k"),
                            S["<|end|>"], S["<|assistant|>"], c("h"), c("i"), S["<|end|>"]]
    assert mask.tolist() == [0] * 9 + [1, 1, 1]
    opened, opened_mask = render_conversation(turns[:2], tok, open_reply=True)
    assert opened.tolist() == ids[:9].tolist() and opened_mask.tolist() == [0] * 9


def test_plain_template_is_one_line_per_turn():
    tok = CharTokenizer("".join(CHARS))
    template = ChatTemplate(tok)
    assert not template.role_tokens and template.stop_strings == ("\n",)
    ids, mask = template.render([Turn("user", "hi\nok"), Turn("assistant", "ok")])
    assert tok.decode(ids) == "User: hi ok\nAssistant: ok\n"
    assert tok.decode(ids[mask == 1]) == " ok\n"


def test_old_turns_are_dropped_to_fit_but_the_persona_stays():
    template = ChatTemplate(LetterTokenizer(len(PIECES), PIECES, SPECIALS))
    turns = [Turn("system", "hi")] + [Turn(r, "ok ok") for r in ("user", "assistant") * 4]
    kept = template.fit(turns, 20)
    assert kept[0] == turns[0] and kept[-1] == turns[-1] and len(kept) < len(turns)
    assert len(template.render(kept, open_reply=True)[0]) <= 20
    assert len(template.render([turns[0]] + turns[-len(kept):], open_reply=True)[0]) > 20


def test_plain_template_needs_its_characters():
    with pytest.raises(UserError, match="needs the characters"):
        ChatTemplate(CharTokenizer("abc"))


def test_chat_streams_replies_and_keeps_the_history():
    s = session(True, persona="hi")
    lines = chat(s, "ok\nhi ok\n")
    assert lines[:2] == ["bot> hi\n", "bot> hi\n"]
    assert s.turns == [Turn("user", "ok"), Turn("assistant", "hi"), Turn("user", "hi ok"), Turn("assistant", "hi")]
    assert s.conversation()[0] == Turn("system", "hi")


def test_plain_chat_reply_ends_at_the_newline():
    s = session(False)
    assert chat(s, "ok\n")[0] == "bot> ok\n"
    assert s.turns == [Turn("user", "ok"), Turn("assistant", "ok")]


def test_chat_commands(tmp_path):
    s = session(True, persona="hi")
    path = tmp_path / "chat.json"
    lines = chat(s, f"ok\n/temperature 0.5\n/temperature -1\n/temperature warm\n/save {path}\n/persona ok\n"
                    "/reset\n/unknown\n/quit\nok\n")
    assert lines[1] == "(temperature 0.5)\n" and s.settings.temperature == 0.5
    assert lines[2].startswith("error: temperature=-1.0 is negative")
    assert lines[3].startswith("error: /temperature needs a number")
    assert lines[4] == f"(saved to {path})\n"
    assert json.loads(path.read_text())["turns"] == [{"role": "user", "text": "ok"},
                                                     {"role": "assistant", "text": "hi"}]
    assert lines[5] == "(persona set)\n" and s.persona == "ok"
    assert lines[6] == "(history cleared)\n" and s.turns == []
    assert lines[7].startswith("error: /unknown is not a command")
    assert len(lines) == 9  # /quit ended the chat before the last message


def test_a_message_outside_the_char_vocabulary_is_refused_before_replying():
    tok = CharTokenizer("".join(CHARS))
    s = ChatSession(Generator(bigram_gpt(list(range(tok.vocab_size))), tok), GenerationSettings())
    lines = chat(s, "ok é\n")
    assert lines[0].startswith("error: your message has the character 'é' (U+00E9)")
    assert s.turns == []
    np.testing.assert_array_equal(s.generator.encode("ok"), tok.encode("ok"))
