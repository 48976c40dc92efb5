"""Per-language transcript normalization: one cleaned spelling per word, and a character whitelist.

Indian-language text arrives with the same word spelled by different code point sequences (NFC vs NFD,
precomposed vs decomposed nukta letters, old-style Malayalam chillus written with ZWJ, invisible
format characters). Training labels, LM text and scoring must all see one form, so every consumer
uses :class:`Normalizer` with the recipe's ``prepare.text`` settings:

1. Unicode NFC; invisible format characters (ZWSP, BOM, soft hyphen, ...) removed.
2. Malayalam: consonant + virama + ZWJ becomes the atomic chillu letter (same glyph, one spelling);
   Bengali: ta + virama + ZWJ becomes khanda ta (U+09CE) likewise.
3. ZWJ/ZWNJ removed or kept (``zwj``); nukta letters decomposed to base + nukta (NFC composes some,
   such as U+0929, and decomposes others, such as U+0958: decomposing all makes them agree).
4. ASCII ``|`` written for a danda becomes ``।`` (``|`` is the CTC word delimiter and may never
   appear in text); Latin apostrophe variants become ``'``.
5. Latin case folding (``lowercase``); punctuation (Unicode category P*, dandas included) replaced by a
   space when ``remove_punctuation``; digits kept, dropped or left for ``check`` to reject (``digits``).
6. Whitespace collapsed to single spaces.

``check`` then names the characters outside the script's whitelist (its Unicode block's letters and
marks, plus what the policies allow and ``extra_chars``); the caller rejects such utterances.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from lrasr.errors import LrasrError
from lrasr.recipe import TextConfig

ZWNJ, ZWJ = "\u200c", "\u200d"
DANDA, DOUBLE_DANDA = "\u0964", "\u0965"
NUKTA_CHARS = frozenset("\u093c\u09bc\u0a3c\u0abc\u0b3c\u0cbc")


@dataclass(frozen=True)
class Script:
    name: str
    ranges: tuple[tuple[int, int], ...]  # inclusive code point ranges of the script's letters and marks
    latin: bool = False


SCRIPTS: dict[str, Script] = {
    "devanagari": Script("devanagari", ((0x0900, 0x097F), (0xA8E0, 0xA8FF))),
    "bengali": Script("bengali", ((0x0980, 0x09FF),)),
    "gurmukhi": Script("gurmukhi", ((0x0A00, 0x0A7F),)),
    "gujarati": Script("gujarati", ((0x0A80, 0x0AFF),)),
    "odia": Script("odia", ((0x0B00, 0x0B7F),)),
    "tamil": Script("tamil", ((0x0B80, 0x0BFF),)),
    "telugu": Script("telugu", ((0x0C00, 0x0C7F),)),
    "kannada": Script("kannada", ((0x0C80, 0x0CFF),)),
    "malayalam": Script("malayalam", ((0x0D00, 0x0D7F),)),
    # English: a-z only (plus the apostrophe); "latin": every Latin letter with its accents
    "english": Script("english", ((0x0061, 0x007A), (0x0041, 0x005A)), latin=True),
    "latin": Script("latin", ((0x0041, 0x005A), (0x0061, 0x007A), (0x00C0, 0x024F), (0x1E00, 0x1EFF)), latin=True),
}

# Default script per language code (ISO 639-1 where one exists, else 639-3).
LANGUAGE_SCRIPTS: dict[str, str] = {
    **{code: "devanagari" for code in ("hi", "mr", "ne", "sa", "kok", "mai", "bho", "mag", "hne", "doi", "brx")},
    "bn": "bengali", "as": "bengali", "mni": "bengali",
    "pa": "gurmukhi", "gu": "gujarati", "or": "odia", "ta": "tamil", "te": "telugu", "kn": "kannada",
    "ml": "malayalam",
    "en": "english",
    **{code: "latin" for code in ("latin", "fr", "de", "es", "it", "pt", "nl", "sw", "id", "ms", "tl", "vi",
                                  "tr", "pl", "ro", "ha", "yo", "ig", "so", "eu", "ca", "cy", "ga")},
}

# English names of the languages above, for a recipe that writes `language: telugu` instead of the code.
LANGUAGE_NAMES: dict[str, str] = {
    "hindi": "hi", "marathi": "mr", "nepali": "ne", "sanskrit": "sa", "konkani": "kok", "maithili": "mai",
    "bhojpuri": "bho", "magahi": "mag", "chhattisgarhi": "hne", "dogri": "doi", "bodo": "brx", "bengali": "bn",
    "bangla": "bn", "assamese": "as", "manipuri": "mni", "punjabi": "pa", "gujarati": "gu", "odia": "or",
    "oriya": "or", "tamil": "ta", "telugu": "te", "kannada": "kn", "malayalam": "ml", "english": "en",
}

# Malayalam chillu letters written the pre-Unicode-5.1 way: consonant + virama + ZWJ.
_CHILLUS = {"\u0d23": "\u0d7a", "\u0d28": "\u0d7b", "\u0d30": "\u0d7c", "\u0d32": "\u0d7d", "\u0d33": "\u0d7e",
            "\u0d15": "\u0d7f"}
_CHILLU_RE = re.compile("([" + "".join(_CHILLUS) + "])\u0d4d\u200d")
# Bengali khanda ta written the pre-Unicode-4.1 way: ta + virama + ZWJ.
_OLD_KHANDA_TA = "\u09a4\u09cd\u200d"
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u0060": "'", "\u00b4": "'"})
_SPACE_RE = re.compile(r"\s+")


def _nukta_decompositions() -> dict[str, str]:
    """Every precomposed letter whose canonical decomposition ends in a nukta -> base + nukta."""
    table = {}
    for code in range(0x0900, 0x0D80):
        ch = chr(code)
        decomposed = unicodedata.normalize("NFD", ch)
        if len(decomposed) > 1 and decomposed[-1] in NUKTA_CHARS:
            table[ch] = decomposed
    return table


_NUKTA_TABLE = str.maketrans(_nukta_decompositions())


def script_for(language: str, cfg: TextConfig) -> Script:
    """The script a recipe's text uses: ``prepare.text.script`` if set, else the language's default."""
    name = (cfg.script or LANGUAGE_SCRIPTS.get(language.lower(), "")).lower()
    if name not in SCRIPTS:
        known = ", ".join(sorted(SCRIPTS))
        if cfg.script:
            raise LrasrError(f"prepare.text.script: unknown script {cfg.script!r} (known: {known})")
        code = LANGUAGE_NAMES.get(language.lower())
        if code:  # a name, not a code: the code also names the model, LM and reports
            raise LrasrError(f"'{language}' is a language name: write its code, language: {code}")
        raise LrasrError(f"no default script for language {language!r}; set prepare.text.script to one of: {known}")
    return SCRIPTS[name]


class Normalizer:
    """Normalizes transcripts of one language as ``TextConfig`` says (see the module docstring)."""

    def __init__(self, language: str, cfg: TextConfig | None = None):
        self.language = language
        self.cfg = cfg or TextConfig()
        self.script = script_for(language, self.cfg)
        self.allowed = self._whitelist()

    def _whitelist(self) -> frozenset[str]:
        allowed: set[str] = set()
        for lo, hi in self.script.ranges:
            for code in range(lo, hi + 1):
                ch = chr(code)
                cat = unicodedata.category(ch)
                if cat[0] in "LM":  # letters and combining marks; digits, punctuation, symbols below
                    allowed.add(ch)
        if self.cfg.lowercase and self.script.latin:
            allowed = {c for c in allowed if not c.isupper()}
        if self.script.latin:
            allowed.add("'")
        if self.cfg.digits == "keep":
            allowed.update("0123456789")
            for lo, hi in self.script.ranges:
                allowed.update(chr(c) for c in range(lo, hi + 1) if unicodedata.category(chr(c)) == "Nd")
        if self.cfg.zwj == "keep" and not self.script.latin:
            allowed.update((ZWJ, ZWNJ))
        if not self.cfg.remove_punctuation and not self.script.latin:
            allowed.update((DANDA, DOUBLE_DANDA))
        allowed.update(ch for ch in self.cfg.extra_chars if not ch.isspace())
        return frozenset(allowed)

    def normalize(self, text: str) -> str:
        """Cleaned text. Characters outside the whitelist are left in place (``check`` names them)."""
        text = unicodedata.normalize("NFC", text)
        text = "".join(ch for ch in text if ch in (ZWJ, ZWNJ) or unicodedata.category(ch) != "Cf")
        if self.script.name == "malayalam":
            text = _CHILLU_RE.sub(lambda m: _CHILLUS[m.group(1)], text)
        elif self.script.name == "bengali":
            text = text.replace(_OLD_KHANDA_TA, "\u09ce")  # same idea: one code point for khanda ta
        if self.cfg.zwj == "remove":
            text = text.replace(ZWJ, "").replace(ZWNJ, "")
        text = text.translate(_NUKTA_TABLE)
        if self.script.latin:
            text = text.translate(_APOSTROPHES)
        else:
            text = text.replace("||", DOUBLE_DANDA).replace("|", DANDA)
        if self.cfg.lowercase:
            text = text.lower()
        keep_extra = set(self.cfg.extra_chars)
        out = []
        for i, ch in enumerate(text):
            cat = unicodedata.category(ch)
            if ch in keep_extra:
                out.append(ch)
            elif cat[0] == "P" and self.cfg.remove_punctuation:
                if ch == "'" and self.script.latin and _between_letters(text, i):
                    out.append(ch)  # don't, o'clock: the apostrophe is part of the word
                else:
                    out.append(" ")
            elif cat == "Nd" and self.cfg.digits == "drop":
                out.append(" ")
            elif ch == "|":  # never let the word delimiter through, whatever the script
                out.append(" ")
            else:
                out.append(ch)
        return _SPACE_RE.sub(" ", "".join(out)).strip()

    def check(self, text: str) -> tuple[str, set[str]]:
        """(normalized text, characters in it outside the whitelist). Empty set = acceptable."""
        norm = self.normalize(text)
        return norm, {ch for ch in norm if ch != " " and ch not in self.allowed}

    def __call__(self, text: str) -> str:
        return self.normalize(text)


def _between_letters(text: str, i: int) -> bool:
    return 0 < i < len(text) - 1 and text[i - 1].isalpha() and text[i + 1].isalpha()


def describe_char(ch: str) -> str:
    """``'x' U+0078 LATIN SMALL LETTER X`` — how rejected characters are named in reports."""
    name = unicodedata.name(ch, "unnamed")
    shown = ch if unicodedata.category(ch)[0] not in "CZM" else ""
    return f"{shown!r} U+{ord(ch):04X} {name}" if shown else f"U+{ord(ch):04X} {name}"


def recipe_normalizer(recipe) -> "Normalizer":
    """The normalizer a recipe's acoustic data, LM text and scoring all share."""
    return Normalizer(recipe.language, recipe.prepare.text)
