"""Per-language normalization: NFC/NFD, nukta, ZWJ/ZWNJ, chillus, dandas, punctuation, digits, case."""

from __future__ import annotations

import unicodedata

import pytest

from lrasr.errors import LrasrError
from lrasr.recipe import TextConfig
from lrasr.text.normalize import LANGUAGE_SCRIPTS, Normalizer, describe_char

# one ordinary word per language, in its own script
WORDS = {"hi": "नमस्ते", "mr": "पाणी", "ne": "नेपाल", "bn": "বাংলা", "as": "অসমীয়া", "ta": "தமிழ்",
         "te": "తెలుగు", "kn": "ಕನ್ನಡ", "ml": "മലയാളം", "gu": "ગુજરાતી", "pa": "ਪੰਜਾਬੀ", "or": "ଓଡ଼ିଆ",
         "en": "hello"}


@pytest.mark.parametrize("lang", sorted(WORDS))
def test_every_default_language_accepts_its_script_and_rejects_others(lang):
    norm = Normalizer(lang, TextConfig())
    word = WORDS[lang]
    text, bad = norm.check(f"{word}, {word}.")
    assert bad == set(), (lang, bad)
    assert text.split() == [norm.normalize(word)] * 2
    foreign = WORDS["ta"] if lang != "ta" else WORDS["hi"]
    _, bad = norm.check(f"{word} {foreign}")
    assert bad and bad <= set(unicodedata.normalize("NFC", foreign))


@pytest.mark.parametrize("lang", ["hi", "bn", "pa", "or"])
def test_nfc_nfd_and_nukta_variants_compare_equal(lang):
    norm = Normalizer(lang, TextConfig())
    samples = {"hi": ["\u0958\u093f\u0932\u093e", "\u0915\u093c\u093f\u0932\u093e", "\u0929", "\u0928\u093c"],
               "bn": ["\u09df", "\u09af\u09bc", "\u09dc", "\u09a1\u09bc"],
               "pa": ["\u0a36", "\u0a38\u0a3c", "\u0a5b", "\u0a1c\u0a3c"],
               "or": ["\u0b5c", "\u0b21\u0b3c"]}[lang]
    for precomposed, decomposed in zip(samples[::2], samples[1::2]):
        forms = {norm.normalize(x) for x in (precomposed, decomposed, unicodedata.normalize("NFD", precomposed),
                                              unicodedata.normalize("NFC", decomposed))}
        assert len(forms) == 1, (lang, forms)
        assert norm.check(precomposed)[1] == set()


def test_malayalam_old_chillu_and_zwj_policy():
    remove = Normalizer("ml", TextConfig(zwj="remove"))
    assert remove.normalize("അവന\u0d4d\u200d") == remove.normalize("അവൻ") == "അവൻ"
    assert remove.normalize("ക\u0d4d\u200cക") == "ക\u0d4dക"
    keep = Normalizer("ml", TextConfig(zwj="keep"))
    assert keep.normalize("അവന\u0d4d\u200d") == "അവൻ"  # chillus are made atomic either way
    text, bad = keep.check("ക\u0d4d\u200cക")
    assert "\u200c" in text and bad == set()
    bn = Normalizer("bn", TextConfig())
    assert bn.normalize("উ\u09a4\u09cd\u200dস") == bn.normalize("উ\u09ceস") == "উ\u09ceস"
    hi = Normalizer("hi", TextConfig(zwj="remove"))
    assert "\u200d" not in hi.normalize("क्\u200dष")


def test_danda_and_pipe_never_reach_the_tokenizer():
    norm = Normalizer("hi", TextConfig())
    assert norm.normalize("राम आया। सीता गई॥ फिर | चले") == "राम आया सीता गई फिर चले"
    keep = Normalizer("hi", TextConfig(remove_punctuation=False))
    text, bad = keep.check("राम आया| सीता गई॥")
    assert text == "राम आया। सीता गई॥" and bad == set()
    for lang in ("en", "ml"):
        assert "|" not in Normalizer(lang, TextConfig(remove_punctuation=False)).normalize("a|b ന|മ")


def test_digit_policies():
    assert Normalizer("hi", TextConfig(digits="keep")).check("साल 2020 और २०२१") == ("साल 2020 और २०२१", set())
    assert Normalizer("hi", TextConfig(digits="drop")).check("साल 2020 और २०२१") == ("साल और", set())
    text, bad = Normalizer("hi", TextConfig(digits="reject")).check("साल 2020 और २०२१")
    assert bad == {"2", "0", "२", "०", "१"}


def test_latin_case_punctuation_apostrophes_and_whitespace():
    en = Normalizer("en", TextConfig())
    assert en.check("  Don’t   STOP,\tnow!!  ") == ("don't stop now", set())
    assert en.normalize("'quoted' word") == "quoted word"
    assert en.check("Café")[1] == {"é"}
    assert Normalizer("fr", TextConfig()).check("Café Noël") == ("café noël", set())
    assert Normalizer("en", TextConfig(lowercase=False)).check("Hello") == ("Hello", set())
    assert Normalizer("en", TextConfig(extra_chars="é")).check("café")[1] == set()
    # punctuation listed in extra_chars is kept (and allowed), not turned into a space
    assert Normalizer("en", TextConfig(extra_chars="-")).check("well-known") == ("well-known", set())
    assert en.normalize("well-known") == "well known"
    assert en.normalize("a\u200bb\ufeffc\u00add") == "abcd"  # invisible format characters go


def test_script_override_and_unknown_language():
    assert Normalizer("bho", TextConfig()).script.name == "devanagari"
    assert Normalizer("xx", TextConfig(script="telugu")).check("తెలుగు")[1] == set()
    with pytest.raises(LrasrError, match="prepare.text.script"):
        Normalizer("xx", TextConfig())
    with pytest.raises(LrasrError, match="unknown script"):
        Normalizer("hi", TextConfig(script="klingon"))
    assert {"hi", "mr", "ne", "bn", "as", "ta", "te", "kn", "ml", "gu", "pa", "or", "en"} <= set(LANGUAGE_SCRIPTS)


def test_describe_char():
    assert describe_char("a") == "'a' U+0061 LATIN SMALL LETTER A"
    assert describe_char("\u200d") == "U+200D ZERO WIDTH JOINER"
