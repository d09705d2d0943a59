"""Joining a continuation to a broken reply: what is restated is dropped, nothing else
is lost, and the live view never has to take text back."""

from __future__ import annotations

import re

from hypothesis import assume, given
from hypothesis import strategies as st

from nbstream._core.recovery import MIN_OVERLAP, Stitcher


def stitch(before: str, pieces: list[str]) -> tuple[str, list[str]]:
    s = Stitcher(before)
    shown = [s.feed(p) for p in pieces]
    shown.append(s.flush())
    return before + "".join(shown), shown


def test_the_last_words_restated_are_dropped() -> None:
    joined, _ = stitch(
        "The report covers three quarters", [" three quarters of", " growth."]
    )
    assert joined == "The report covers three quarters of growth."


def test_an_unfinished_word_restated_is_dropped() -> None:
    """What SmolLM2 on llama.cpp does when it is sent a partial reply to continue."""
    joined, _ = stitch("a lone feline named Lun", ["Lun, a majestic", " cat."])
    assert joined == "a lone feline named Lun, a majestic cat."


def test_a_model_that_starts_over_word_for_word_is_joined_once() -> None:
    before = "As the sun dipped into the horizon, a cat"
    joined, shown = stitch(before, [before[:10], before[10:], " walked home."])
    assert joined == before + " walked home."
    assert shown[:2] == ["", ""]  # held while it repeated, never shown twice


def test_a_short_reply_is_not_mistaken_for_a_restart() -> None:
    assert stitch("ha", ["ha!"])[0] == "haha!"


words = st.lists(
    st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=9),
    min_size=2,
    max_size=60,
)


@given(words=words, cut=st.integers(1, 10_000), seed=st.integers(1, 30))
def test_an_exact_continuation_loses_no_character(
    words: list[str], cut: int, seed: int
) -> None:
    text = " ".join(words) + "."
    c = 1 + cut % (len(text) - 1)
    before, rest = text[:c], text[c:]
    # a text that restates itself right at the cut cannot be told from a model
    # restating it: such cuts are outside this property
    tail_word = re.search(r"\w{3,40}$", before)
    assume(not (tail_word and rest.lstrip(" ").startswith(tail_word.group())))
    assume(
        not any(before.endswith(rest[:k]) for k in range(MIN_OVERLAP, len(rest) + 1))
    )
    assume(not (len(before) >= MIN_OVERLAP and rest.startswith(before)))
    assume(not (before.endswith(" ") and rest.startswith(" ")))
    pieces = [rest[i : i + seed] for i in range(0, len(rest), seed)]
    joined, _ = stitch(before, pieces)
    assert joined == text


def test_a_new_sentence_after_an_unfinished_one_keeps_the_words_apart() -> None:
    """SmolLM2 on llama.cpp, sent "…on the" to continue, wrote "Luna was …"."""
    assert stitch("a house on the", ["Luna was", " curious."])[0] == (
        "a house on the Luna was curious."
    )


def test_a_new_sentence_after_punctuation_keeps_a_space() -> None:
    """What SmolLM2 did in notebooks/recovery.ipynb: "…extinguished," + "The sun …"."""
    assert stitch("the day was extinguished,", ["The sun", " set."])[0] == (
        "the day was extinguished, The sun set."
    )
