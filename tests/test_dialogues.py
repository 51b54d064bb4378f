"""The dialogue builder on a tiny hand-written play: speeches, persona conversations, pairs, splits."""

from __future__ import annotations

from gptjax.data import conversations as conv
from gptjax.data import dialogues
from gptjax.data.chat_template import Turn
from gptjax.data.sources import Document, plays

PLAY = """# The Tiny Play

## ACT I

### SCENE I. A room.

_Enter ANNA and
BEN_

**ANNA**  
Good morrow, Ben.  
How dost thou?

**BEN**  
_\\[Aside]_  
Well enough.

**ANNA**  
Then come\\--walk with me.

*Exit Ben.*

**ANNA**  
He is gone.

**CLOWN**  
*[Sings.]*  
Hey ho.

**All**  
Hey ho!

### SCENE II. A street.

**BEN**  
New scene, new words.

**ANNA**  
And a reply.
"""


def tiny() -> dialogues.Play:
    return dialogues.parse_play("comedies/tiny.md", PLAY)


def test_parse_drops_directions_and_merges_a_speaker_split_by_one():
    play = tiny()
    assert play.title == "The Tiny Play"
    assert [list(s) for s in play.scenes] == [
        [("ANNA", "Good morrow, Ben.\nHow dost thou?"), ("BEN", "Well enough."),
         ("ANNA", "Then come--walk with me.\nHe is gone."), ("CLOWN", "Hey ho."), ("All", "Hey ho!")],
        [("BEN", "New scene, new words."), ("ANNA", "And a reply.")]]


def test_persona_conversations_cover_each_reply_once_and_never_cross_a_scene():
    found = dialogues.play_conversations(tiny(), max_exchanges=4)
    by_persona = {c.turns[0].text: c.turns[1:] for c in found}
    assert by_persona["You are BEN, in *The Tiny Play*."] == (
        Turn("user", "Good morrow, Ben.\nHow dost thou?"), Turn("assistant", "Well enough."))
    annas = [c.turns[1:] for c in found if c.turns[0].text.startswith("You are ANNA")]
    assert annas == [(Turn("user", "Well enough."), Turn("assistant", "Then come--walk with me.\nHe is gone.")),
                     (Turn("user", "New scene, new words."), Turn("assistant", "And a reply."))]
    assert sum(c.turns[0].text.startswith("You are CLOWN") for c in found) == 1
    assert not any("All" in c.turns[0].text for c in found)  # a group is never the persona
    assert all(c.group == "comedies/tiny.md" for c in found)
    replies = sorted(t.text for c in found for t in c.turns if t.role == "assistant")
    assert len(replies) == len(set(replies)) == 4


def test_long_runs_become_multi_turn_conversations_cut_at_max_exchanges():
    scene = "\n\n".join(f"**{'AB'[i % 2]}**  \nline {i}" for i in range(7))
    play = dialogues.parse_play("x.md", "# X\n\n" + scene)
    b = [c for c in dialogues.play_conversations(play, max_exchanges=2) if c.turns[0].text.startswith("You are B")]
    assert [[t.text for t in c.turns[1:]] for c in b] == [["line 0", "line 1", "line 2", "line 3"],
                                                          ["line 4", "line 5"]]
    a = [c for c in dialogues.play_conversations(play, max_exchanges=2) if c.turns[0].text.startswith("You are A")]
    assert [[t.text for t in c.turns[1:]] for c in a] == [["line 1", "line 2", "line 3", "line 4"],
                                                          ["line 5", "line 6"]]


def test_exchanges_are_speech_reply_pairs():
    pairs = dialogues.play_exchanges(tiny())
    assert pairs[0] == dialogues.Exchange("The Tiny Play", "ANNA", "Good morrow, Ben.\nHow dost thou?",
                                          "BEN", "Well enough.")
    assert len(pairs) == 5 and pairs[-1].character == "ANNA"


def test_whole_plays_go_to_one_split_and_the_jsonl_reads_back(tmp_path):
    played = [dialogues.parse_play(f"p{i}.md", PLAY.replace("Tiny", f"Tiny {i}")) for i in range(6)]
    splits = dialogues.dialogue_splits(played, 0.2, 0.2, seed=0)
    assert splits == dialogues.dialogue_splits(played, 0.2, 0.2, seed=0)
    groups = {s: {c.group for c in cs} for s, cs in splits.items()}
    assert all(groups[s] for s in conv.SPLITS) and not (groups["train"] & (groups["val"] | groups["test"]))
    pairs = dialogues.exchange_splits(played, 0.2, 0.2, seed=0)
    titles = {s: {f"p{int(e.play.split()[-2])}.md" for e in es} for s, es in pairs.items()}
    assert titles == groups
    path = str(tmp_path / "dialogues.jsonl")
    assert dialogues.write_dialogues(path, played) == sum(map(len, splits.values()))
    back, stats = conv.read_conversations(path)
    assert conv.split_conversations(back, 0.2, 0.2, seed=0)["val"][0].turns == splits["val"][0].turns
    assert stats.malformed == 0


def test_the_real_plays_parse_without_leftover_markup():
    played = dialogues.parsed_plays([d for d in plays() if d.name == "tragedies/hamlet.md"])
    speeches = [s for scene in played[0].scenes for s in scene]
    assert played[0].title == "Hamlet" and len(speeches) > 1000
    assert not any(ch in s.text for s in speeches for ch in "_*\\[]")
    assert sum(s.speaker == "HAMLET" for s in speeches) > 300


def test_documents_are_accepted_too():
    assert dialogues.parsed_plays([Document("comedies/tiny.md", PLAY)])[0] == tiny()
